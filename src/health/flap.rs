//! Flap damping: a target whose verdict keeps changing is held out of the answers until it
//! has been stable for a while.
//!
//! Hysteresis ([`super::hysteresis`]) absorbs a backend that alternates per request, but
//! not one that fails in bursts a little longer than `fall` probes: each burst flips the
//! verdict, and each flip reaches resolvers and users as a different answer (with rise/fall
//! 2, bursts of half a probe interval flipped it 15 times in 20 s). So the verdict changes
//! of each target are counted over a sliding window: more than `flap_changes` of them
//! within `flap_window` is *flapping*, and a flapping target is published down, whatever
//! its verdict, until it has been **stable** for `flap_hold`: no verdict change and no
//! result disagreeing with the verdict (one failed probe of an up target, or one success of
//! a down one, starts the hold again). Then its verdict is published as it is, and its
//! change history starts afresh.
//!
//! Going down is never delayed: a down verdict is published at once, flapping or not;
//! damping only holds back returns. At its first return a flapping target looks exactly
//! like one recovering from a short outage, so with the default `flap_changes = 1` a target
//! that returns within `flap_window` of going down is held too: it is answered again after
//! `flap_hold` of stability instead of after `rise` successes. A short outage then costs a
//! slower return, and a flapping backend changes the answer once (down) per episode.
//!
//! The state is plain data with the times passed in (no clock inside), kept in the target's
//! health entry so that it belongs to the target rather than to a probe task. Memory is
//! bounded: at most `MAX_FLAP_CHANGES + 1` change times per target.

use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use tracing::{info, warn};

use super::state::ProbeId;
use crate::model::{FlapSpec, probe::MAX_FLAP_CHANGES};

/// Flap damping state of one target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flap {
    /// Times of the latest verdict changes within the window, oldest first.
    changes: VecDeque<Instant>,
    /// The last sign of instability: a verdict change or a result disagreeing with the
    /// verdict.
    unsettled_at: Option<Instant>,
    episode: Option<Episode>,
}

/// A flapping episode in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Episode {
    since: Instant,
    /// Verdict changes within the window when it started, and that window.
    trigger: u32,
    window: Duration,
    /// Verdict changes since it started, those that started it included.
    changes: u32,
    /// When the hold ends if the target stays stable.
    hold_until: Instant,
}

/// Flapping starts or ends: each is logged once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapEvent {
    Started {
        /// Verdict changes within the window, this one included.
        changes: u32,
        window: Duration,
    },
    Ended {
        lasted: Duration,
        /// Verdict changes during the episode.
        changes: u32,
        /// The verdict published from now on.
        up: bool,
    },
}

/// What one result leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The verdict to publish: the hysteresis verdict, or down while flapping.
    pub up: bool,
    pub event: Option<FlapEvent>,
}

/// A flapping episode as shown by the status API and explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapView {
    pub since: SystemTime,
    /// When the hold ends if no result disagrees with the verdict meanwhile.
    pub hold_until: SystemTime,
    /// Verdict changes during the episode.
    pub changes: u32,
}

impl Flap {
    /// Feeds one probe result at `now`: `ok` is the result, `verdict` the hysteresis state
    /// after it, `changed` whether the result changed that state.
    pub fn observe(
        &mut self,
        spec: &FlapSpec,
        now: Instant,
        ok: bool,
        verdict: bool,
        changed: bool,
    ) -> Step {
        if spec.changes == 0 {
            // Damping off (perhaps by a reload during an episode): the verdict as it is.
            self.changes.clear();
            self.unsettled_at = None;
            let event = self.episode.take().map(|e| e.end(now, verdict));
            return Step { up: verdict, event };
        }
        if changed || ok != verdict {
            self.unsettled_at = Some(now);
        }
        if changed {
            self.changes.push_back(now);
            if let Some(e) = &mut self.episode {
                e.changes += 1;
            }
        }
        let keep = spec.changes.min(MAX_FLAP_CHANGES) as usize + 1;
        while self.changes.len() > keep
            || self
                .changes
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= spec.window)
        {
            self.changes.pop_front();
        }
        let recent = self.changes.len() as u32;
        let event = match self.episode {
            None if changed && recent > spec.changes => {
                self.episode = Some(Episode {
                    since: now,
                    trigger: recent,
                    window: spec.window,
                    changes: recent,
                    hold_until: now + spec.hold,
                });
                Some(FlapEvent::Started {
                    changes: recent,
                    window: spec.window,
                })
            }
            Some(e) if self.stable_for(now) >= spec.hold => {
                self.episode = None;
                self.changes.clear();
                Some(e.end(now, verdict))
            }
            Some(ref mut e) => {
                e.hold_until = self.unsettled_at.unwrap_or(now) + spec.hold;
                None
            }
            None => None,
        };
        Step {
            up: verdict && self.episode.is_none(),
            event,
        }
    }

    pub fn is_flapping(&self) -> bool {
        self.episode.is_some()
    }

    /// How long the target has been stable at `now`.
    fn stable_for(&self, now: Instant) -> Duration {
        self.unsettled_at
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t))
    }

    /// Why a flapping target is down, e.g. "flapping: 2 changes in 60s".
    pub fn reason(&self) -> Option<String> {
        self.episode
            .map(|e| format!("flapping: {} changes in {}", e.trigger, seconds(e.window)))
    }

    /// The episode in wall-clock time (`now` and `wall` are the same moment).
    pub fn view(&self, now: Instant, wall: SystemTime) -> Option<FlapView> {
        let at = |t: Instant| {
            if t <= now {
                wall - (now - t)
            } else {
                wall + (t - now)
            }
        };
        let e = self.episode?;
        Some(FlapView {
            since: at(e.since),
            hold_until: at(e.hold_until),
            changes: e.changes,
        })
    }
}

impl Episode {
    fn end(self, now: Instant, up: bool) -> FlapEvent {
        FlapEvent::Ended {
            lasted: now.saturating_duration_since(self.since),
            changes: self.changes,
            up,
        }
    }
}

/// `60s`, `4.8s`: the window as people write it.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Logs a flapping episode's start (WARN) or end (INFO), once each.
pub fn log_event(id: &ProbeId, spec: &FlapSpec, event: FlapEvent) {
    let (app, cluster) = id.labels();
    match event {
        FlapEvent::Started { changes, window } => warn!(
            app = %app,
            cluster = %cluster,
            changes,
            window = %seconds(window),
            hold = %seconds(spec.hold),
            "flapping: held out of the answers until stable for the hold time"
        ),
        FlapEvent::Ended {
            lasted,
            changes,
            up,
        } => info!(
            app = %app,
            cluster = %cluster,
            changes,
            lasted = %seconds(Duration::from_millis(lasted.as_millis() as u64)),
            now = if up { "up" } else { "down" },
            "flapping over: stable for the hold time"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::hysteresis::Hysteresis;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn spec(changes: u32, window: Duration, hold: Duration) -> FlapSpec {
        FlapSpec {
            changes,
            window,
            hold,
        }
    }

    fn defaults() -> FlapSpec {
        spec(1, S(60), S(60))
    }

    /// Probe timing of a simulated target.
    #[derive(Clone, Copy)]
    struct Timing {
        interval: Duration,
        fast: Duration,
        rise: u32,
        fall: u32,
        /// How long each probe takes.
        took: Duration,
    }

    /// The issue's setting: rise/fall 2 and the default fast re-probe (interval / 5). Its
    /// 15 changes in 20 s match a 1 s interval (20 intervals) and bursts of 0.4-0.45 s.
    const ISSUE: Timing = Timing {
        interval: Duration::from_secs(1),
        fast: Duration::from_millis(200),
        rise: 2,
        fall: 2,
        took: Duration::from_millis(3),
    };

    /// The built-in interval (5 s) with rise/fall 2.
    const DEFAULT: Timing = Timing {
        interval: Duration::from_secs(5),
        fast: Duration::from_secs(1),
        ..ISSUE
    };

    /// Changes of the published verdict (time, up) and flap events of a simulated run.
    type Simulated = (Vec<(Duration, bool)>, Vec<(Duration, FlapEvent)>);

    /// Runs the probe loop's schedule (first probe at `first`, then every interval, or
    /// every fast interval while a change is being confirmed, each a few ms late as timers
    /// are) against `backend` (result at a time since the start) until `until`; returns
    /// every change of the published verdict (time, up) and the flap events.
    fn simulate(
        t: Timing,
        flap: FlapSpec,
        first: Duration,
        until: Duration,
        backend: &mut dyn FnMut(Duration) -> bool,
    ) -> Simulated {
        let base = Instant::now();
        let mut h = Hysteresis::new(true, t.rise, t.fall);
        let mut f = Flap::default();
        let mut published = true;
        let (mut changes, mut events) = (Vec::new(), Vec::new());
        let mut at = first;
        let mut seed = first.as_millis() as u64;
        while at < until {
            let ok = backend(at);
            let done = at + t.took;
            let changed = h.observe(ok).is_some();
            let step = f.observe(&flap, base + done, ok, h.is_up(), changed);
            if step.up != published {
                published = step.up;
                changes.push((done, published));
            }
            if let Some(e) = step.event {
                events.push((done, e));
            }
            seed = (seed * 7919 + 13) % 97;
            at += if h.settled() { t.interval } else { t.fast } + MS(seed / 8);
        }
        (changes, events)
    }

    /// 503 for `half`, then 200 for `half`, and so on, from `start` (200 before).
    fn windows(start: Duration, half: Duration) -> impl FnMut(Duration) -> bool {
        move |at| at < start || ((at - start).as_nanos() / half.as_nanos()) % 2 == 1
    }

    /// Down (failing) from `from` for `length`.
    fn outage(from: Duration, length: Duration) -> impl FnMut(Duration) -> bool {
        move |at| at < from || at >= from + length
    }

    /// Published changes at or after `start` and before `end`.
    fn between(changes: &[(Duration, bool)], start: Duration, end: Duration) -> usize {
        changes
            .iter()
            .filter(|(t, _)| (start..end).contains(t))
            .count()
    }

    #[test]
    fn bursts_of_about_half_an_interval_change_the_answer_at_most_twice_in_20_s() {
        let start = S(30);
        for t in [ISSUE, DEFAULT] {
            let interval = t.interval.as_millis() as u64;
            for half_pct in (40..=60).step_by(2) {
                for first_pct in (0..100).step_by(10) {
                    let half = MS(interval * half_pct / 100);
                    let first = MS(interval * first_pct / 100);
                    // Two minutes of bursts (and 20 intervals, the issue's 20 s at 1 s).
                    let end = start + S(120).max(t.interval * 20);
                    let (changes, _) =
                        simulate(t, defaults(), first, end, &mut windows(start, half));
                    let case = format!("interval {interval}ms, bursts {half:?}, first {first:?}");
                    assert!(
                        between(&changes, start, start + S(20)) <= 2,
                        "{case}: {changes:?}"
                    );
                    assert!(
                        between(&changes, start, start + t.interval * 20) <= 2,
                        "{case}: {changes:?}"
                    );
                    // The target leaves first, and never returns within a minute (the
                    // window, and the hold) of leaving.
                    if let Some(first) = changes.first() {
                        assert!(!first.1, "{case}: {changes:?}");
                    }
                    for pair in changes.windows(2).filter(|p| p[1].1) {
                        assert!(pair[1].0 - pair[0].0 >= S(60), "{case}: {changes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_issues_bursts_flip_the_answer_often_without_damping_and_once_with_it() {
        let start = S(30);
        let (changes, events) = simulate(
            ISSUE,
            spec(0, S(60), S(60)),
            MS(300),
            start + S(20),
            &mut windows(start, MS(420)),
        );
        assert!(between(&changes, start, start + S(20)) >= 10, "{changes:?}");
        assert!(events.is_empty());
        // With damping: down once, flapping from the first return on, held while it lasts.
        let (changes, events) = simulate(
            ISSUE,
            defaults(),
            MS(300),
            start + S(20),
            &mut windows(start, MS(420)),
        );
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(
            events[..],
            [(_, FlapEvent::Started { changes: 2, .. })]
        ));
    }

    #[test]
    fn a_backend_alternating_per_request_changes_nothing() {
        let mut n = 0u64;
        let mut alternate = |_| {
            n += 1;
            n.is_multiple_of(2)
        };
        let (changes, events) = simulate(DEFAULT, defaults(), MS(100), S(600), &mut alternate);
        assert!(changes.is_empty(), "{changes:?}");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn an_outage_longer_than_the_window_returns_after_rise_successes() {
        let (from, length) = (S(20), S(180));
        let (changes, events) = simulate(
            ISSUE,
            defaults(),
            MS(1000),
            S(400),
            &mut outage(from, length),
        );
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(!changes[0].1 && changes[1].1);
        // Down within interval + (fall − 1) × fast; up within interval + (rise − 1) × fast.
        assert!(changes[0].0 <= from + S(6) + MS(3), "{changes:?}");
        assert!(changes[1].0 <= from + length + S(6) + MS(3), "{changes:?}");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn a_short_outage_returns_after_the_hold_not_after_rise() {
        let (from, length) = (S(20), S(15));
        let (changes, events) = simulate(
            ISSUE,
            defaults(),
            MS(1000),
            S(300),
            &mut outage(from, length),
        );
        assert_eq!(changes.len(), 2, "{changes:?}");
        let (down, up) = (changes[0], changes[1]);
        assert!(!down.1 && up.1);
        // The verdict is up again within interval + (rise − 1) × fast of the outage's end;
        // the first result a whole hold after that ends the hold: the README's bound of
        // 2 × interval + (rise − 1) × fast + hold (plus the probe's own time).
        let end = from + length;
        assert!(up.0 >= end + S(60), "{changes:?}");
        assert!(up.0 <= end + S(5 + 1 + 60 + 5) + MS(6), "{changes:?}");
        assert!(matches!(events[0].1, FlapEvent::Started { changes: 2, .. }));
        assert!(matches!(
            events[1].1,
            FlapEvent::Ended {
                changes: 2,
                up: true,
                ..
            }
        ));
        assert_eq!(events[1].0, up.0, "the hold ends with the return");
    }

    #[test]
    fn going_down_is_never_delayed() {
        // Every failure the hysteresis turns into a down verdict is published with it,
        // flapping or not, whatever the settings.
        for flap in [defaults(), spec(3, S(30), S(10)), spec(0, S(1), S(1))] {
            let base = Instant::now();
            let mut h = Hysteresis::new(true, 2, 2);
            let mut f = Flap::default();
            for i in 0..500u64 {
                let ok = (i / 3) % 2 == 0 || i % 7 == 0;
                let changed = h.observe(ok).is_some();
                let step = f.observe(&flap, base + MS(i * 500), ok, h.is_up(), changed);
                if !h.is_up() {
                    assert!(!step.up, "result {i}");
                }
                if !f.is_flapping() {
                    assert_eq!(step.up, h.is_up(), "result {i}");
                }
            }
        }
    }

    #[test]
    fn more_than_flap_changes_within_the_window_is_flapping() {
        let flap = spec(3, S(60), S(30));
        let base = Instant::now();
        let mut f = Flap::default();
        let mut verdict = true;
        let mut started = None;
        for i in 1..=4u64 {
            verdict = !verdict;
            let step = f.observe(&flap, base + S(i * 10), verdict, verdict, true);
            if step.event.is_some() {
                started = Some((i, step));
            }
        }
        let (i, step) = started.expect("flapping");
        assert_eq!(i, 4, "the fourth change within 60s");
        assert_eq!(
            step,
            Step {
                up: false,
                event: Some(FlapEvent::Started {
                    changes: 4,
                    window: S(60)
                })
            }
        );
        assert_eq!(f.reason().as_deref(), Some("flapping: 4 changes in 60s"));
        // Changes spread wider than the window never add up.
        let mut g = Flap::default();
        for i in 1..=100u64 {
            let up = i % 2 == 0;
            assert_eq!(g.observe(&flap, base + S(i * 21), up, up, true).event, None);
        }
    }

    #[test]
    fn stable_means_no_change_and_no_disagreeing_result_for_the_hold() {
        let flap = spec(1, S(60), S(30));
        let base = Instant::now();
        let mut f = Flap::default();
        f.observe(&flap, base, false, false, true);
        let step = f.observe(&flap, base + S(5), true, true, true);
        assert!(f.is_flapping() && !step.up);
        // A single failed result (not enough to change the verdict) starts the hold again.
        f.observe(&flap, base + S(20), false, true, false);
        assert!(!f.observe(&flap, base + S(49), true, true, false).up);
        let view = f
            .view(base + S(49), SystemTime::UNIX_EPOCH + S(1000))
            .unwrap();
        assert_eq!(view.since, SystemTime::UNIX_EPOCH + S(1000 - 44));
        assert_eq!(view.hold_until, SystemTime::UNIX_EPOCH + S(1000 + 1));
        assert_eq!(view.changes, 2);
        let step = f.observe(&flap, base + S(50), true, true, false);
        assert_eq!(
            step,
            Step {
                up: true,
                event: Some(FlapEvent::Ended {
                    lasted: S(45),
                    changes: 2,
                    up: true
                })
            }
        );
        assert!(!f.is_flapping() && f.view(base + S(50), SystemTime::now()).is_none());
        // The history starts afresh: the next outage goes down, and its return after more
        // than the window is normal.
        assert_eq!(
            f.observe(&flap, base + S(51), false, false, true).event,
            None
        );
        let step = f.observe(&flap, base + S(120), true, true, true);
        assert_eq!(
            step,
            Step {
                up: true,
                event: None
            }
        );
    }

    #[test]
    fn a_flapping_target_that_stays_dead_ends_the_episode_down() {
        let flap = spec(1, S(60), S(30));
        let base = Instant::now();
        let mut f = Flap::default();
        f.observe(&flap, base, false, false, true);
        f.observe(&flap, base + S(5), true, true, true);
        f.observe(&flap, base + S(10), false, false, true);
        for s in (15..40).step_by(5) {
            assert_eq!(
                f.observe(&flap, base + S(s), false, false, false).event,
                None
            );
        }
        let step = f.observe(&flap, base + S(40), false, false, false);
        assert!(!step.up);
        assert!(matches!(
            step.event,
            Some(FlapEvent::Ended {
                changes: 3,
                up: false,
                ..
            })
        ));
        assert_eq!(f.reason(), None);
    }

    #[test]
    fn turning_damping_off_ends_an_episode_and_follows_the_verdict() {
        let base = Instant::now();
        let mut f = Flap::default();
        f.observe(&defaults(), base, false, false, true);
        f.observe(&defaults(), base + S(1), true, true, true);
        assert!(f.is_flapping());
        let step = f.observe(&spec(0, S(60), S(60)), base + S(2), true, true, false);
        assert!(step.up && matches!(step.event, Some(FlapEvent::Ended { up: true, .. })));
        assert!(!f.is_flapping());
    }

    #[test]
    fn at_most_flap_changes_plus_one_change_times_are_kept() {
        let base = Instant::now();
        for flap in [defaults(), spec(MAX_FLAP_CHANGES, S(3600), S(3600))] {
            let mut f = Flap::default();
            for i in 0..10_000u64 {
                let up = i % 2 == 0;
                f.observe(&flap, base + MS(i), up, up, true);
                assert!(f.changes.len() <= flap.changes as usize + 1);
            }
        }
    }
}

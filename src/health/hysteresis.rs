//! Rise/fall hysteresis: the one place where probe results become a health state.
//!
//! A state changes only after `rise` consecutive successes (down → up) or `fall`
//! consecutive failures (up → down); any result that agrees with the current state resets
//! the count. So a backend alternating 200/503 never changes state when rise ≥ 2 and
//! fall ≥ 2, however long it flaps.

#[derive(Debug, Clone)]
pub struct Hysteresis {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Hysteresis {
    pub fn new(initial_up: bool, rise: u32, fall: u32) -> Self {
        Self {
            up: initial_up,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// True when the last result agreed with the state (no change is pending): the
    /// scheduler goes back to the normal interval.
    pub fn settled(&self) -> bool {
        self.streak == 0
    }

    /// Feeds one result; returns the new state when it changes.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_fall_failures_and_up_after_rise_successes() {
        let mut h = Hysteresis::new(true, 2, 3);
        assert_eq!(h.observe(false), None);
        assert!(!h.settled());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert!(h.settled() && !h.is_up());
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert!(h.is_up());
    }

    #[test]
    fn a_single_agreeing_result_resets_the_count() {
        let mut h = Hysteresis::new(true, 2, 3);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert!(h.settled());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert!(h.is_up());
    }

    #[test]
    fn flapping_never_changes_state() {
        for initial in [true, false] {
            let mut h = Hysteresis::new(initial, 2, 3);
            for i in 0..1000 {
                assert_eq!(h.observe(i % 2 == 0), None);
            }
            assert_eq!(h.is_up(), initial);
        }
    }

    #[test]
    fn rise_and_fall_of_one_follow_every_result() {
        let mut h = Hysteresis::new(false, 1, 1);
        assert_eq!(h.observe(true), Some(true));
        assert_eq!(h.observe(false), Some(false));
    }
}

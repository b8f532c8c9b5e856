//! `nearest`: the healthy target whose cluster is closest to the client.

use super::{Candidate, Picks};
use crate::geo::distance::great_circle_km;

/// The candidate closest (great circle) to `client`; candidates without coordinates are
/// never chosen. Ties go to the first listed.
pub fn pick(candidates: &[Candidate], client: (f64, f64), out: &mut Picks) {
    let best = candidates
        .iter()
        .filter_map(|c| Some((great_circle_km(client, c.coordinates?), c.target)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, t)) = best {
        out.push(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(target: usize, coordinates: Option<(f64, f64)>) -> Candidate {
        Candidate {
            target,
            weight: 1,
            priority: 1,
            coordinates,
            key: 0,
        }
    }

    #[test]
    fn closest_wins() {
        let frankfurt = c(0, Some((50.1, 8.7)));
        let virginia = c(1, Some((39.0, -77.5)));
        let nowhere = c(2, None);
        let mut out = Picks::new();
        pick(&[virginia, frankfurt, nowhere], (48.9, 2.35), &mut out); // Paris
        assert_eq!(out[..], [0]);
        out.clear();
        pick(&[virginia, frankfurt], (40.7, -74.0), &mut out); // New York
        assert_eq!(out[..], [1]);
        out.clear();
        pick(&[nowhere], (0.0, 0.0), &mut out);
        assert!(out.is_empty());
    }
}

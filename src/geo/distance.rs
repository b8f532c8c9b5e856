//! Great-circle distance between two points on Earth.

/// Mean Earth radius (IUGG), in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Haversine distance in kilometres between (lat, lon) points in degrees.
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distances() {
        // Frankfurt – New York ≈ 6,200 km; a point to itself 0; antipodes half the circumference.
        let d = great_circle_km((50.11, 8.68), (40.71, -74.01));
        assert!((6150.0..6250.0).contains(&d), "{d}");
        assert_eq!(great_circle_km((10.0, 20.0), (10.0, 20.0)), 0.0);
        let half = great_circle_km((0.0, 0.0), (0.0, 180.0));
        assert!((half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }
}

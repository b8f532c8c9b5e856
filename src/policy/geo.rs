//! `geo` rules: which pools a client's location maps to.

use std::sync::Arc;

use crate::geo::Location;

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Region(Arc<str>),
    /// ISO country code, upper case.
    Country(Arc<str>),
    /// Continent code, upper case.
    Continent(Arc<str>),
    Default,
}

impl Matcher {
    pub fn matches(&self, location: &Location) -> bool {
        match self {
            Matcher::Region(r) => location.region.as_deref() == Some(r),
            Matcher::Country(c) => location.country.as_deref() == Some(c),
            Matcher::Continent(c) => location.continent.as_deref() == Some(c),
            Matcher::Default => true,
        }
    }
}

/// Clients matching any of `matchers` go to `pools`, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matchers: Vec<Matcher>,
    /// Indices into the app's pools.
    pub pools: Vec<usize>,
    pub geofence: bool,
}

/// The first rule matching `location`.
pub fn matching_rule<'a>(rules: &'a [Rule], location: &Location) -> Option<(usize, &'a Rule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.matchers.iter().any(|m| m.matches(location)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins() {
        let rules = vec![
            Rule {
                matchers: vec![Matcher::Region("eu-dc".into())],
                pools: vec![0],
                geofence: false,
            },
            Rule {
                matchers: vec![
                    Matcher::Country("DE".into()),
                    Matcher::Continent("EU".into()),
                ],
                pools: vec![1],
                geofence: true,
            },
            Rule {
                matchers: vec![Matcher::Default],
                pools: vec![2],
                geofence: false,
            },
        ];
        let de = Location {
            country: crate::geo::Code::new("DE"),
            continent: crate::geo::Code::new("EU"),
            ..Location::default()
        };
        assert_eq!(matching_rule(&rules, &de).unwrap().0, 1);
        let dc = Location {
            region: Some("eu-dc".into()),
            ..de.clone()
        };
        assert_eq!(matching_rule(&rules, &dc).unwrap().0, 0);
        assert_eq!(matching_rule(&rules, &Location::default()).unwrap().0, 2);
        assert!(matching_rule(&rules[..2], &Location::default()).is_none());
    }
}

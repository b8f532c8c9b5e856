//! `GET /api/v1/fleet`.

use super::AdminState;

/// `GET /api/v1/fleet`: this instance and the live peers it sees, with whether each runs
/// the same configuration (hash) as this one.
pub fn fleet_json(state: &AdminState) -> serde_json::Value {
    let Some(fleet) = &state.fleet else {
        return serde_json::json!({ "enabled": false });
    };
    let view = fleet.view();
    let peers: Vec<serde_json::Value> = view
        .peers
        .iter()
        .map(|p| {
            serde_json::json!({
                "node": p.node,
                "gossip": p.addr.to_string(),
                "config_hash": p.config_hash,
                "same_config": p.config_hash.as_deref() == Some(view.config_hash.as_str()),
            })
        })
        .collect();
    serde_json::json!({
        "enabled": true,
        "node": fleet.node,
        "gossip": fleet.listen.to_string(),
        "authenticated": fleet.authenticated,
        "config_hash": view.config_hash,
        "live_peers": peers.len(),
        "config_divergent_peers": view.divergent(),
        "peers": peers,
    })
}

//! Coinbase Advanced Trade: recording `coinbase.jsonl`.

use pricebeast::mock_exchange::MockOptions;

use super::support::{
    a_missing_ack_fails_the_connection, refused_symbol_costs_only_itself, survives_drop_stall_and_garbage, Rig,
};

const SYMBOLS: &[(&str, &str)] = &[("BTC-USD", "BTC-USD"), ("ETH-USD", "ETH-USD")];

#[tokio::test]
async fn recorded_prices_land_in_the_book_exactly() {
    let rig = Rig::start("coinbase", SYMBOLS, MockOptions::default(), None).await;
    rig.connected().await;
    // The recording's last BTC-USD ticker: 68900.50 at 2026-04-07T14:30:03Z.
    rig.expect_price("BTC-USD", "68900.50", 1_775_572_203_000).await;
    let subscribes = rig.mock.control().received();
    assert!(subscribes
        .iter()
        .any(|m| m.contains(r#""channel":"ticker""#) && m.contains("BTC-USD") && m.contains("ETH-USD")));
    assert!(subscribes.iter().any(|m| m.contains(r#""channel":"heartbeats""#)));
}

#[tokio::test]
async fn survives_drops_stalls_and_garbage() {
    survives_drop_stall_and_garbage("coinbase", SYMBOLS, ("BTC-USD", "68900.50", 1_775_572_203_000)).await;
}

/// One symbol coinbase does not list, refused in the documented Exchange-feed refusal.
const WITH_REFUSED: &[(&str, &str)] = &[("BTC-USD", "BTC-USD"), ("ETH-USD", "ETH-USD"), ("DOGE-EUR", "DOGE-EUR")];

#[tokio::test]
async fn a_refused_symbol_is_listed_retried_and_costs_nothing_else() {
    refused_symbol_costs_only_itself("coinbase", WITH_REFUSED, "DOGE-EUR", ("BTC-USD", "68900.50", 1_775_572_203_000))
        .await;
}

#[tokio::test]
async fn a_missing_ack_fails_the_connection_with_a_close_frame() {
    a_missing_ack_fails_the_connection("coinbase", SYMBOLS).await;
}

//! OKX v5 public `tickers`: recording `okx.jsonl`.

use pricebeast::mock_exchange::MockOptions;

use super::support::{
    a_missing_ack_fails_the_connection, refused_symbol_costs_only_itself, survives_drop_stall_and_garbage, Rig,
};

const SYMBOLS: &[(&str, &str)] = &[("BTC-USDT", "BTC-USDT"), ("ETH-USDT", "ETH-USDT")];

#[tokio::test]
async fn recorded_prices_land_in_the_book_exactly() {
    let rig = Rig::start("okx", SYMBOLS, MockOptions::default(), None).await;
    rig.connected().await;
    // The recording's last BTC-USDT push: last 30243.5, ts "1652459226240".
    rig.expect_price("BTC-USDT", "30243.5", 1_652_459_226_240).await;
    let received = rig.mock.control().received();
    let subscribe: serde_json::Value = received
        .iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .find(|m| m["op"] == "subscribe")
        .expect("a subscribe request");
    assert_eq!(
        subscribe["args"],
        serde_json::json!([{"channel": "tickers", "instId": "BTC-USDT"}, {"channel": "tickers", "instId": "ETH-USDT"}])
    );
    assert_eq!(rig.mock.control().subscribes(), 1, "one request carries every instrument");
    assert_eq!((rig.reading().parse_errors, rig.reading().venue_errors), (0, 0));
}

#[tokio::test]
async fn survives_drops_stalls_and_garbage() {
    survives_drop_stall_and_garbage("okx", SYMBOLS, ("BTC-USDT", "30243.5", 1_652_459_226_240)).await;
}

/// One symbol okx does not list, refused in the 60018 refusal.
const WITH_REFUSED: &[(&str, &str)] = &[("BTC-USDT", "BTC-USDT"), ("ETH-USDT", "ETH-USDT"), ("DOGE-EUR", "DOGE-EUR")];

#[tokio::test]
async fn a_refused_symbol_is_listed_retried_and_costs_nothing_else() {
    refused_symbol_costs_only_itself("okx", WITH_REFUSED, "DOGE-EUR", ("BTC-USDT", "30243.5", 1_652_459_226_240)).await;
}

#[tokio::test]
async fn a_missing_ack_fails_the_connection_with_a_close_frame() {
    a_missing_ack_fails_the_connection("okx", SYMBOLS).await;
}

//! Gate Spot WebSocket v4: recording `gateio.jsonl`.

use pricebeast::mock_exchange::MockOptions;

use super::support::{
    a_missing_ack_fails_the_connection, refused_symbol_costs_only_itself, survives_drop_stall_and_garbage, Rig,
};

const SYMBOLS: &[(&str, &str)] = &[("BTC-USDT", "BTC_USDT"), ("NEO-BTC", "NEO_BTC"), ("DIS-USDT", "DIS_USDT")];

#[tokio::test]
async fn recorded_prices_land_in_the_book_exactly() {
    let before_s = pricebeast::clock::Now::read().unix_ms / 1000;
    let rig = Rig::start("gateio", SYMBOLS, MockOptions::default(), None).await;
    rig.connected().await;
    // The recording's last ticker of each pair; the event time is the push's `time`, in seconds.
    rig.expect_price("BTC-USDT", "19106.55", 1_606_291_803_000).await;
    rig.expect_price("NEO-BTC", "0.0018716", 1_619_093_533_000).await;
    rig.expect_price("DIS-USDT", "121.58", 1_619_093_544_000).await;
    let after_s = pricebeast::clock::Now::read().unix_ms / 1000;
    let received = rig.mock.control().received();
    assert_eq!(received.len(), 1, "{received:?}");
    let subscribe: serde_json::Value = serde_json::from_str(&received[0]).expect("the subscribe is JSON");
    assert_eq!(subscribe["channel"], "spot.tickers");
    assert_eq!(subscribe["event"], "subscribe");
    assert_eq!(subscribe["payload"], serde_json::json!(["BTC_USDT", "NEO_BTC", "DIS_USDT"]));
    let time = subscribe["time"].as_u64().expect("time is whole seconds");
    assert!((before_s..=after_s).contains(&time), "{time} not in {before_s}..={after_s}");
    assert_eq!(rig.reading().parse_errors, 0);
}

#[tokio::test]
async fn survives_drops_stalls_and_garbage() {
    survives_drop_stall_and_garbage("gateio", SYMBOLS, ("DIS-USDT", "121.58", 1_619_093_544_000)).await;
}

/// One symbol gateio does not list, refused in the documented refusal.
const WITH_REFUSED: &[(&str, &str)] = &[("BTC-USDT", "BTC_USDT"), ("DIS-USDT", "DIS_USDT"), ("DOGE-EUR", "DOGE_EUR")];

#[tokio::test]
async fn a_refused_symbol_is_listed_retried_and_costs_nothing_else() {
    refused_symbol_costs_only_itself("gateio", WITH_REFUSED, "DOGE_EUR", ("DIS-USDT", "121.58", 1_619_093_544_000))
        .await;
}

#[tokio::test]
async fn a_missing_ack_fails_the_connection_with_a_close_frame() {
    a_missing_ack_fails_the_connection("gateio", SYMBOLS).await;
}

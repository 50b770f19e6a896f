//! Bybit v5 public spot: recording `bybit.jsonl`.

use pricebeast::mock_exchange::MockOptions;

use super::support::{
    a_missing_ack_fails_the_connection, eventually, refused_symbol_costs_only_itself, survives_drop_stall_and_garbage,
    Rig,
};

const SYMBOLS: &[(&str, &str)] = &[("BTC-USDT", "BTCUSDT"), ("ETH-USDT", "ETHUSDT")];

/// More symbols than one spot subscribe request may name (10), so the subscribe is split.
const TWELVE: &[(&str, &str)] = &[
    ("BTC-USDT", "BTCUSDT"),
    ("ETH-USDT", "ETHUSDT"),
    ("SOL-USDT", "SOLUSDT"),
    ("XRP-USDT", "XRPUSDT"),
    ("DOGE-USDT", "DOGEUSDT"),
    ("ADA-USDT", "ADAUSDT"),
    ("AVAX-USDT", "AVAXUSDT"),
    ("DOT-USDT", "DOTUSDT"),
    ("LINK-USDT", "LINKUSDT"),
    ("LTC-USDT", "LTCUSDT"),
    ("TRX-USDT", "TRXUSDT"),
    ("BCH-USDT", "BCHUSDT"),
];

#[tokio::test]
async fn recorded_prices_land_in_the_book_exactly() {
    let rig = Rig::start("bybit", TWELVE, MockOptions::default(), None).await;
    rig.connected().await;
    // The recording's last BTCUSDT ticker: lastPrice 16363.78, ts 1672305380595.
    rig.expect_price("BTC-USDT", "16363.78", 1_672_305_380_595).await;
    eventually("both subscribe requests", || (rig.mock.control().subscribes() >= 2).then_some(())).await;
    let requests: Vec<serde_json::Value> = rig
        .mock
        .control()
        .received()
        .iter()
        .map(|m| serde_json::from_str(m).expect("Bybit requests are JSON"))
        .filter(|m: &serde_json::Value| m["op"] == "subscribe")
        .collect();
    let sizes: Vec<usize> = requests.iter().map(|r| r["args"].as_array().map_or(0, Vec::len)).collect();
    assert_eq!(sizes, vec![10, 2], "spot takes at most 10 args per subscribe");
    let topics: Vec<&str> =
        requests.iter().flat_map(|r| r["args"].as_array().into_iter().flatten()).filter_map(|a| a.as_str()).collect();
    let want: Vec<String> = TWELVE.iter().map(|(_, theirs)| format!("tickers.{theirs}")).collect();
    assert_eq!(topics, want);
    // Every recorded line, the ack per request and the recorded pong included, was understood.
    assert_eq!((rig.reading().parse_errors, rig.reading().venue_errors), (0, 0));
}

#[tokio::test]
async fn survives_drops_stalls_and_garbage() {
    survives_drop_stall_and_garbage("bybit", SYMBOLS, ("BTC-USDT", "16363.78", 1_672_305_380_595)).await;
}

/// One symbol bybit does not list, refused in the recorded refusal.
const WITH_REFUSED: &[(&str, &str)] = &[("BTC-USDT", "BTCUSDT"), ("ETH-USDT", "ETHUSDT"), ("DOGE-EUR", "DOGEEUR")];

#[tokio::test]
async fn a_refused_symbol_is_listed_retried_and_costs_nothing_else() {
    refused_symbol_costs_only_itself("bybit", WITH_REFUSED, "DOGEEUR", ("BTC-USDT", "16363.78", 1_672_305_380_595))
        .await;
}

#[tokio::test]
async fn a_missing_ack_fails_the_connection_with_a_close_frame() {
    a_missing_ack_fails_the_connection("bybit", SYMBOLS).await;
}

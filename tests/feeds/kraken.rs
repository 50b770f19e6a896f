//! Kraken Spot WebSocket v2: recording `kraken.jsonl`.

use pricebeast::mock_exchange::MockOptions;

use super::support::{
    a_missing_ack_fails_the_connection, refused_symbol_costs_only_itself, survives_drop_stall_and_garbage, Rig,
};

const SYMBOLS: &[(&str, &str)] = &[("BTC-USD", "BTC/USD"), ("ALGO-USD", "ALGO/USD")];

#[tokio::test]
async fn recorded_prices_land_in_the_book_exactly() {
    let rig = Rig::start("kraken", SYMBOLS, MockOptions::default(), None).await;
    rig.connected().await;
    // The recording's last tickers. Kraken sends numbers: 105899.40 keeps its trailing zero.
    rig.expect_price("BTC-USD", "105899.40", 1_671_960_659_123).await;
    rig.expect_price("ALGO-USD", "0.10035", 1_695_632_671_742).await;
    let received = rig.mock.control().received();
    assert_eq!(
        received,
        vec![
            r#"{"method":"subscribe","params":{"channel":"ticker","event_trigger":"trades","snapshot":true,"symbol":["BTC/USD","ALGO/USD"]}}"#
        ]
    );
    assert_eq!(rig.reading().parse_errors, 0);
}

#[tokio::test]
async fn survives_drops_stalls_and_garbage() {
    survives_drop_stall_and_garbage("kraken", SYMBOLS, ("BTC-USD", "105899.40", 1_671_960_659_123)).await;
}

/// One symbol kraken does not list, refused in the real v2 refusal.
const WITH_REFUSED: &[(&str, &str)] = &[("BTC-USD", "BTC/USD"), ("ALGO-USD", "ALGO/USD"), ("XBT-EUR", "XBT/EUR")];

#[tokio::test]
async fn a_refused_symbol_is_listed_retried_and_costs_nothing_else() {
    refused_symbol_costs_only_itself("kraken", WITH_REFUSED, "XBT/EUR", ("BTC-USD", "105899.40", 1_671_960_659_123))
        .await;
}

#[tokio::test]
async fn a_missing_ack_fails_the_connection_with_a_close_frame() {
    a_missing_ack_fails_the_connection("kraken", SYMBOLS).await;
}

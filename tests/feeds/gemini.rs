//! Gemini Market Data v2: recording `gemini.jsonl`.

use pricebeast::mock_exchange::MockOptions;

use super::support::{
    a_missing_ack_fails_the_connection, refused_symbol_costs_only_itself, survives_drop_stall_and_garbage, Rig,
};

const SYMBOLS: &[(&str, &str)] = &[("BTC-USD", "BTCUSD"), ("ANKR-USD", "ANKRUSD"), ("FIL-USD", "FILUSD")];

#[tokio::test]
async fn recorded_prices_land_in_the_book_exactly() {
    let rig = Rig::start("gemini", SYMBOLS, MockOptions::default(), None).await;
    rig.connected().await;
    // BTCUSD's only price is the latest trade of the initial snapshot: 9122.04 at 1560976400428.
    rig.expect_price("BTC-USD", "9122.04", 1_560_976_400_428).await;
    // The recording's last trades of ANKRUSD and FILUSD.
    rig.expect_price("ANKR-USD", "0.07946", 1_624_493_670_759).await;
    rig.expect_price("FIL-USD", "58.4998", 1_624_493_681_030).await;
    let received = rig.mock.control().received();
    assert_eq!(
        received,
        vec![r#"{"subscriptions":[{"name":"l2","symbols":["BTCUSD","ANKRUSD","FILUSD"]}],"type":"subscribe"}"#]
    );
    // Book changes without trades carry no price: nothing for the pairs we did not ask about.
    assert_eq!(rig.reading().unknown_symbols, 0);
    assert_eq!(rig.reading().parse_errors, 0);
}

#[tokio::test]
async fn survives_drops_stalls_and_garbage() {
    survives_drop_stall_and_garbage("gemini", SYMBOLS, ("FIL-USD", "58.4998", 1_624_493_681_030)).await;
}

/// One symbol gemini does not list, refused in the REST error shape.
const WITH_REFUSED: &[(&str, &str)] = &[("BTC-USD", "BTCUSD"), ("FIL-USD", "FILUSD"), ("DOGE-EUR", "DOGEEUR")];

#[tokio::test]
async fn a_refused_symbol_is_listed_retried_and_costs_nothing_else() {
    refused_symbol_costs_only_itself("gemini", WITH_REFUSED, "DOGEEUR", ("FIL-USD", "58.4998", 1_624_493_681_030))
        .await;
}

#[tokio::test]
async fn a_missing_ack_fails_the_connection_with_a_close_frame() {
    a_missing_ack_fails_the_connection("gemini", SYMBOLS).await;
}

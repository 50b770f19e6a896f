//! Every exchange feed client against the mock exchange, over real loopback WebSockets: the
//! recorded prices land in the book exactly, and the client survives drops, stalls and garbage.

mod feeds {
    mod support;

    mod bybit;
    mod coinbase;
    mod gateio;
    mod gemini;
    mod kraken;
    mod okx;
}

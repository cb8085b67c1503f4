//! Fuzz target `signature`: The `bk-signature` parser and the server's verification path (header, cookie and query
//! parameter), with the client signer cross-checked; input layout in `bkjs_api::fuzzing::signature`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bkjs_api::fuzzing::signature(data));

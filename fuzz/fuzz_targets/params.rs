//! Fuzz target `params`: Query string, form body and JSON body parameters under the router's limits; input layout in
//! `bkjs_api::fuzzing::params`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bkjs_api::fuzzing::params(data));

//! Fuzz target `multipart`: The multipart/form-data parser, with the fixed boundary `XX` or one taken from the input; input
//! layout in `bkjs_api::fuzzing::multipart`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bkjs_api::fuzzing::multipart(data));

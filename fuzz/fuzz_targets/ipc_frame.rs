//! Fuzz target `ipc_frame`: The IPC wire format: the hub's frame reader and request decoding, the client's frame split and
//! reply/push decoding (`bkjs_ipc::fuzzing::frames`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bkjs_ipc::fuzzing::frames(data));

//! The stock `bkjs` binary: the library with no application of its own.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]

/// mimalloc instead of glibc malloc: a request allocates and frees many small buffers (headers,
/// parameters, rows, JSON), and glibc spent about a tenth of a signed request's CPU in
/// malloc/free and `malloc_consolidate`. Built with `no_thp`: with transparent huge pages each
/// process of the tree held about 8 MB more resident (see docs/decisions.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator's committed bytes now and at peak, for `heap.*` in /system/stats.
fn heap() -> bkjs::metrics::HeapFigures {
    let (mut current, mut peak) = (0usize, 0usize);
    // SAFETY: mi_process_info takes nullable out-pointers; the two given point to live locals
    // and the others are null, which it documents as "not wanted".
    unsafe {
        libmimalloc_sys::mi_process_info(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut current,
            &mut peak,
            std::ptr::null_mut(),
        );
    }
    bkjs::metrics::HeapFigures {
        committed: current as u64,
        peak_committed: peak as u64,
    }
}

fn main() -> std::process::ExitCode {
    bkjs::metrics::set_heap_probe(heap);
    bkjs::run(bkjs::App::default())
}

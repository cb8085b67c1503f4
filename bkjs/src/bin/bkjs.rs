//! The stock `bkjs` binary: the library with no application of its own.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]

/// mimalloc instead of glibc malloc: a request allocates and frees many small buffers (headers,
/// parameters, rows, JSON), and glibc spent about a tenth of a signed request's CPU in
/// malloc/free and `malloc_consolidate`. Built with `no_thp`: with transparent huge pages each
/// process of the tree held about 8 MB more resident (see docs/decisions.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bkjs::run(bkjs::App::default())
}

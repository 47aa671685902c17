//! The `k1s` executable: parses the command line and runs it.

/// mimalloc rather than glibc's malloc: request handling allocates and frees many small JSON
/// values across threads, where glibc's arenas are slower and fragment more.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(k1s::cli::main());
}

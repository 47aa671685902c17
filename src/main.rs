//! The `k1s` executable: parses the command line and runs it.

fn main() {
    std::process::exit(k1s::cli::main());
}

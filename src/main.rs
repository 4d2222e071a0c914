fn main() -> std::process::ExitCode {
    rackform::cli::main()
}

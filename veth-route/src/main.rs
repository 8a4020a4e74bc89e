//! Entry point: a CNI plugin when CNI_COMMAND is set, an operator tool otherwise.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("CNI_COMMAND").is_none() {
        if !args.is_empty() {
            std::process::exit(veth_route::operator_cli(&args));
        }
        eprintln!("{}", veth_route::ABOUT);
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(0) } == 1 {
            // A person ran it bare; a runtime that forgot CNI_COMMAND gets a CNI error below.
            std::process::exit(0);
        }
    }
    std::process::exit(cni::plugin::run(&veth_route::VethRoute));
}

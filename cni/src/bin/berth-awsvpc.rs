//! `berth-awsvpc` CNI plugin binary: [`berth_cni::plugin::main`] around
//! [`berth_cni::awsvpc::run`].

fn main() {
    berth_cni::plugin::main(berth_cni::awsvpc::run)
}

//! `berth-bridge` CNI plugin binary: [`berth_cni::plugin::main`] around
//! [`berth_cni::bridge::run`].

fn main() {
    berth_cni::plugin::main(berth_cni::bridge::run)
}

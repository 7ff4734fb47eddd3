//! External tools as values: one subprocess helper, and virt-builder, virt-customize, qemu-img and friends.

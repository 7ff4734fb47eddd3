//! The Ansible protocols: a binary module (args file in, one JSON document out) and a dynamic inventory.

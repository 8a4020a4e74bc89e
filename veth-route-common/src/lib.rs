//! Map key/value types shared by the kernel programs and the userspace loader.
#![no_std]

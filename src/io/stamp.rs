//! A fingerprint that ties files written together: an adapter's weights carry the
//! fingerprint of the config written with them, so a pair mixed by an interrupted save (or by
//! copying one file from another adapter) is refused when read instead of being used.

/// `__metadata__` key of `adapter_model.safetensors` holding the config's fingerprint.
pub const CONFIG_STAMP_KEY: &str = "peft_wgpu.config_fnv1a64";

/// 64-bit FNV-1a of `bytes` as 16 hex digits: stable across platforms and Rust versions.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fnv1a_matches_published_values() {
        assert_eq!(fingerprint(b""), "cbf29ce484222325");
        assert_eq!(fingerprint(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fingerprint(b"foobar"), "85944171f73967e8");
    }
}

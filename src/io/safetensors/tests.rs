//! Tests of the safetensors reader.

use super::*;

#[test]
fn f16_conversion_is_exact_on_landmarks() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
    assert!(f16_to_f32(0x7c00).is_infinite());
    assert!(f16_to_f32(0x7e00).is_nan());
}

/// Tensors taken out of a file from its end give what `f32` gives, in the order asked,
/// a key asked twice included; a missing key or a non-finite value is an error naming it.
#[test]
fn tensors_taken_out_from_the_end_equal_those_read_in_place() {
    let tensors: Vec<(String, HostTensor)> = [("a", 3), ("b", 5), ("c", 2), ("d", 0)]
        .into_iter()
        .map(|(k, n)| {
            (k.to_string(), HostTensor::new(vec![n], (0..n).map(|i| (i * 7) as f32 - 1.5).collect()).expect("shape"))
        })
        .collect();
    let list: Vec<(String, &HostTensor)> = tensors.iter().map(|(k, t)| (k.clone(), t)).collect();
    let bytes = serialize(Path::new("t.safetensors"), &list, None).expect("serialize");
    let file = || TensorFile::from_bytes(Path::new("t.safetensors"), &bytes).expect("valid");
    let keys = ["c", "a", "d", "c", "b"];
    let want: Vec<HostTensor> = keys.iter().map(|k| file().f32(k).expect("in place")).collect();
    assert_eq!(file().into_f32_tensors(&keys).expect("taken out"), want);
    let e = file().into_f32_tensors(&["a", "zz"]).expect_err("missing");
    assert!(e.to_string().contains("zz"), "{e}");
    let bad = HostTensor::new(vec![2], vec![1.0, f32::NAN]).expect("shape");
    let bytes = serialize(Path::new("t.safetensors"), &[("n".to_string(), &bad)], None).expect("serialize");
    let e = TensorFile::from_bytes(Path::new("t.safetensors"), &bytes).expect("valid").into_f32_tensors(&["n"]);
    assert!(e.expect_err("NaN").to_string().contains("`n`"));
}

/// An F64 value too large for f32 is named as stored, not as the infinity it reads as;
/// a stored infinity stays one.
#[test]
fn f64_values_beyond_f32_are_named_as_stored() {
    for (value, want) in
        [(1e300, "holds 1e300 at index [1], beyond f32's range"), (f64::INFINITY, "holds inf at index [1]")]
    {
        let data: Vec<u8> = [0.5, value].iter().flat_map(|v: &f64| v.to_le_bytes()).collect();
        let header = r#"{"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        let file = TensorFile::from_bytes(Path::new("t.safetensors"), &bytes).expect("valid");
        let e = file.f32("w").expect_err("not finite in f32").to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn round_trip_and_errors_name_the_culprit() {
    let dir = std::env::temp_dir().join(format!("peft-wgpu-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("t.safetensors");
    let t = HostTensor::new(vec![2, 3], (0..6).map(|i| i as f32).collect()).expect("shape");
    write(&path, &[("w".into(), &t)], None).expect("write");
    let f = TensorFile::open(&path).expect("open");
    assert_eq!(f.f32("w").expect("w"), t);
    let e = f.f32("missing").expect_err("missing key");
    assert!(e.to_string().contains("missing") && e.to_string().contains("t.safetensors"), "{e}");
    let e = f.f32_shaped("w", &[3, 2]).expect_err("wrong shape");
    assert!(e.to_string().contains("[3, 2]") && e.to_string().contains("`w`"), "{e}");
    // Truncation is detected.
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("truncate");
    let e = TensorFile::open(&path).expect_err("truncated");
    assert!(e.to_string().contains("t.safetensors") && e.to_string().contains("truncated: tensor `w`"), "{e}");
    // So are bytes after the last tensor, from the header alone: a sparse tail of 1 TiB,
    // more than this machine could read, is named as such rather than as a file too large
    // (on Unix, whose file systems keep such a file sparse).
    #[cfg(unix)]
    {
        std::fs::write(&path, &bytes).expect("rewrite");
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_len(1 << 40)).expect("sparse tail");
        let e = TensorFile::open(&path).expect_err("bytes after the last tensor");
        let extra = (1u64 << 40) - bytes.len() as u64;
        assert!(e.to_string().contains(&format!("{extra} unexpected bytes after the last tensor")), "{e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A header that holds one key twice is refused naming the key, whether the two entries
/// agree (a JSON map would keep either) or not (the second would blame an innocent tensor
/// as overlapping); a header too deeply nested to parse says its JSON is not valid.
#[test]
fn a_key_twice_or_a_header_beyond_json_is_named() {
    let file = |header: &str, data: usize| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        TensorFile::from_bytes(Path::new("t.safetensors"), &bytes)
    };
    let a = r#""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
    let b = r#""b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}"#;
    let b_again = r#""b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
    assert!(file(&format!("{{{a},{b}}}"), 8).is_ok(), "each key once");
    for header in [format!("{{{a},{b},{b}}}"), format!("{{{b},{a},{b_again}}}")] {
        let e = file(&header, 8).expect_err("a key twice").to_string();
        assert!(e.contains("t.safetensors") && e.contains("holds `b` twice"), "{e}");
    }
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let e = file(&deep, 0).expect_err("nested too deep").to_string();
    assert!(e.contains("header is not valid JSON"), "{e}");
}

//! Cross-entropy against its f64 twin, PyTorch and its identities.

mod common;

use common::{Rng, assert_close, f64s, fixture, gpu, tol};
use peft_wgpu::ops::loss;
use peft_wgpu::reference::loss as reference;
use peft_wgpu::{Gpu, Tape, Tensor};

const ROWS: &[usize] = &[1, 2, 7, 197];
const CLASSES: &[usize] = &[1, 2, 3, 10, 255, 256, 257, 1000];

fn upload(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, v, shape).unwrap()
}

#[test]
fn cross_entropy_matches_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for &n in ROWS {
        for &k in CLASSES {
            let what = format!("rows={n} classes={k}");
            let logits = rng.normal_vec(n * k, 0.0, 3.0);
            let labels: Vec<u32> = (0..n).map(|_| rng.below(k) as u32).collect();
            let (lt, yt) = (upload(&gpu, &logits, &[n, k]), Tensor::from_u32(&gpu, &labels, &[n]).unwrap());
            let l64 = f64s(&logits);
            let (rows_want, correct_want) = reference::cross_entropy_rows(&l64, &labels, k);

            let (rows, correct) = loss::cross_entropy_rows(&gpu, &lt, &yt).unwrap();
            // log-sum-exp is good to a few ulps of its largest term.
            let lse_scale = logits.iter().fold(1.0f64, |m, &v| m.max(v.abs() as f64));
            assert_close(
                &format!("rows {what}"),
                &gpu.read(&rows).unwrap(),
                &rows_want,
                tol(4.0, k),
                tol(4.0, k) * lse_scale,
            );
            assert_eq!(
                gpu.read(&correct).unwrap(),
                correct_want.iter().map(|&c| c as f32).collect::<Vec<_>>(),
                "{what}"
            );

            let mut tape = Tape::new(&gpu);
            let lv = tape.param(&lt);
            let l = loss::cross_entropy_var(&mut tape, &lv, &yt).unwrap();
            let mean_want = reference::cross_entropy(&l64, &labels, k);
            assert_close(
                &format!("mean {what}"),
                &gpu.read(l.value()).unwrap(),
                &[mean_want],
                tol(4.0, n * k),
                tol(4.0, k) * lse_scale,
            );
            let grads = tape.backward(&l).unwrap();
            let got = gpu.read(grads.get(&lv).unwrap()).unwrap();
            let want = reference::cross_entropy_backward(&l64, &labels, k, 1.0);
            // softmax − onehot: each entry good to a few ulps of 1/N times the lse error.
            assert_close(&format!("dlogits {what}"), &got, &want, tol(8.0, k), tol(8.0, k) * lse_scale / n as f64);
        }
    }
}

#[test]
fn cross_entropy_matches_torch() {
    let gpu = gpu();
    let f = fixture("nn_torch.safetensors");
    let shape = f.shape("ce_logits");
    let raw = f.f32("ce_logits");
    // exp(l − lse) inherits the rounding of l: a few ulps of the largest |logit|.
    let lse_scale = raw.iter().fold(1.0f64, |m, &v| m.max(v.abs() as f64));
    let (logits, labels) = (upload(&gpu, &raw, &shape), f.u32("ce_labels"));
    let labels = Tensor::from_u32(&gpu, &labels, &[shape[0]]).unwrap();
    let (mean, lse) = loss::cross_entropy(&gpu, &logits, &labels).unwrap();
    assert_close("ce loss", &gpu.read(&mean).unwrap(), &f.f64("ce_loss"), 1e-6, 0.0);
    let (rows, correct) = loss::cross_entropy_rows(&gpu, &logits, &labels).unwrap();
    assert_close("ce rows", &gpu.read(&rows).unwrap(), &f.f64("ce_rows"), 1e-6, 4.0 * common::EPS * lse_scale);
    let want: Vec<f32> = f.f64("ce_correct").iter().map(|&c| c as f32).collect();
    assert_eq!(gpu.read(&correct).unwrap(), want, "ce correct");
    let dloss = upload(&gpu, &f.f32("ce_dloss"), &[1]);
    let dl = loss::cross_entropy_backward(&gpu, &logits, &labels, &lse, &dloss).unwrap();
    let abs = 4.0 * common::EPS * lse_scale * 0.7 / shape[0] as f64;
    assert_close("ce dlogits", &gpu.read(&dl).unwrap(), &f.f64("ce_dlogits"), 1e-6, abs);
}

/// Equal logits give ln K whatever the label; one logit far ahead gives 0 and a hit.
#[test]
fn cross_entropy_identities() {
    let gpu = gpu();
    for &k in CLASSES {
        let n = 3;
        let logits = upload(&gpu, &vec![1.5; n * k], &[n, k]);
        let labels = Tensor::from_u32(&gpu, &[0, (k / 2) as u32, (k - 1) as u32], &[n]).unwrap();
        let (mean, _) = loss::cross_entropy(&gpu, &logits, &labels).unwrap();
        assert_close(&format!("uniform K={k}"), &gpu.read(&mean).unwrap(), &[(k as f64).ln()], tol(4.0, k), 1e-7);
        // Ties go to the first index, as torch.argmax.
        let (_, correct) = loss::cross_entropy_rows(&gpu, &logits, &labels).unwrap();
        assert_eq!(gpu.read(&correct).unwrap()[0], 1.0, "K={k}: a tie goes to index 0");
        let mut peaked = vec![0.0f32; k];
        peaked[k - 1] = 200.0;
        let one = Tensor::from_u32(&gpu, &[(k - 1) as u32], &[1]).unwrap();
        let (rows, correct) = loss::cross_entropy_rows(&gpu, &upload(&gpu, &peaked, &[1, k]), &one).unwrap();
        assert_eq!((gpu.read(&rows).unwrap()[0], gpu.read(&correct).unwrap()[0]), (0.0, 1.0), "peaked K={k}");
    }
}

/// A label ≥ K is never used as an index: that row's loss and gradient are NaN (so training
/// on it cannot go on quietly), its hit 0, the others unaffected; the host check names the
/// offending label.
#[test]
fn out_of_range_labels_are_guarded_and_reported() {
    let gpu = gpu();
    let logits = upload(&gpu, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3]);
    let labels = Tensor::from_u32(&gpu, &[2, u32::MAX], &[2]).unwrap();
    let (rows, correct) = loss::cross_entropy_rows(&gpu, &logits, &labels).unwrap();
    let rows = gpu.read(&rows).unwrap();
    assert!(rows[1].is_nan(), "row with a bad label: {}", rows[1]);
    assert_close("good row", &rows[..1], &reference::cross_entropy_rows(&[0.0, 1.0, 2.0], &[2], 3).0, 1e-6, 0.0);
    assert_eq!(gpu.read(&correct).unwrap(), vec![1.0, 0.0]);
    let (_, lse) = loss::cross_entropy(&gpu, &logits, &labels).unwrap();
    let dloss = upload(&gpu, &[1.0], &[1]);
    let grad = gpu.read(&loss::cross_entropy_backward(&gpu, &logits, &labels, &lse, &dloss).unwrap()).unwrap();
    assert!(grad[3..].iter().all(|g| g.is_nan()), "row with a bad label: {grad:?}");
    let want = reference::cross_entropy_backward(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, u32::MAX], 3, 1.0);
    assert!(want[3..].iter().all(|g| g.is_nan()), "the twin: {want:?}");
    assert_close("good row's gradient", &grad[..3], &want[..3], 1e-6, 1e-7);
    assert!(loss::check_labels(&[0, 2, 1], 3).is_ok());
    let e = loss::check_labels(&[0, 2, 3], 3).unwrap_err();
    assert!(e.to_string().contains("label 2") && e.to_string().contains('3'), "{e}");
}

/// The twin's gradient against central differences of the twin's loss.
#[test]
fn twin_backward_matches_finite_differences() {
    let mut rng = Rng::new(42);
    let (n, k) = (4, 5);
    let logits = f64s(&rng.normal_vec(n * k, 0.0, 2.0));
    let labels = [0u32, 4, 2, 2];
    let grad = reference::cross_entropy_backward(&logits, &labels, k, 0.7);
    for i in 0..logits.len() {
        let (mut p, mut m) = (logits.clone(), logits.clone());
        p[i] += 1e-6;
        m[i] -= 1e-6;
        let numeric =
            0.7 * (reference::cross_entropy(&p, &labels, k) - reference::cross_entropy(&m, &labels, k)) / 2e-6;
        assert!((grad[i] - numeric).abs() <= 1e-8, "∂logits[{i}]: analytic {}, numeric {numeric}", grad[i]);
    }
}

#[test]
fn cross_entropy_rejects_bad_shapes() {
    let gpu = gpu();
    let logits = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let wrong_len = Tensor::from_u32(&gpu, &[0, 1, 2], &[3]).unwrap();
    let wrong_type = Tensor::zeros(&gpu, &[2]).unwrap();
    let e = loss::cross_entropy(&gpu, &logits, &wrong_len).unwrap_err();
    assert!(e.to_string().contains("cross_entropy"), "{e}");
    assert!(loss::cross_entropy_rows(&gpu, &logits, &wrong_type).is_err());
    assert!(loss::cross_entropy(&gpu, &Tensor::zeros(&gpu, &[6]).unwrap(), &wrong_len).is_err());
}

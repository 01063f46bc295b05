//! Twins of `shaders/loss.wgsl`: cross-entropy with integer labels.

fn log_sum_exp(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Per row `n` of `logits` (`[rows, classes]`): the loss `logsumexp(l_n) − l_n[t_n]` and
/// `1.0` when the first index of the row's maximum is `t_n`, else `0.0`; a label
/// `≥ classes` gives NaN and `0.0`.
pub fn cross_entropy_rows(logits: &[f64], labels: &[u32], classes: usize) -> (Vec<f64>, Vec<f64>) {
    let mut loss = Vec::new();
    let mut correct = Vec::new();
    for (row, &t) in logits.chunks(classes).zip(labels) {
        loss.push(row.get(t as usize).map_or(f64::NAN, |l| log_sum_exp(row) - l));
        let mut arg = 0;
        for (k, v) in row.iter().enumerate() {
            if *v > row[arg] {
                arg = k;
            }
        }
        correct.push(if arg == t as usize { 1.0 } else { 0.0 });
    }
    (loss, correct)
}

/// The mean of the row losses.
pub fn cross_entropy(logits: &[f64], labels: &[u32], classes: usize) -> f64 {
    let (loss, _) = cross_entropy_rows(logits, labels, classes);
    loss.iter().sum::<f64>() / loss.len() as f64
}

/// `∂l = (softmax(l) − onehot(t))·dloss/rows`; NaN on a row whose label is `≥ classes`.
pub fn cross_entropy_backward(logits: &[f64], labels: &[u32], classes: usize, dloss: f64) -> Vec<f64> {
    let rows = labels.len() as f64;
    let mut d = Vec::with_capacity(logits.len());
    for (row, &t) in logits.chunks(classes).zip(labels) {
        let lse = log_sum_exp(row);
        d.extend(row.iter().enumerate().map(|(k, v)| {
            let onehot = if k == t as usize { 1.0 } else { 0.0 };
            if t as usize >= classes { f64::NAN } else { ((v - lse).exp() - onehot) * dloss / rows }
        }));
    }
    d
}

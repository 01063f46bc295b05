//! Host side of each shader file: shape checks, the forward dispatch on tensors, and the
//! op on tape [`Var`](crate::autograd::Var)s with its backward rule beside it.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod dct;
pub mod dropout;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod patch;
pub mod priors;
pub mod shape;
pub mod softmax;
pub mod spectral;
pub mod spectral_tile;
pub mod sum;

/// The implementation a tuning variable (`PEFT_WGPU_MATMUL`, `PEFT_WGPU_FILTER`) names, read
/// once into `cell`: `None` when unset, empty or `auto`; one of `choices` by its name (any
/// case); an error naming the variable for any other value.
pub(crate) fn env_choice<T: Copy + Send + Sync>(
    cell: &'static std::sync::OnceLock<Result<Option<T>, String>>,
    var: &'static str,
    choices: &[(&str, T)],
) -> crate::Result<Option<T>> {
    let parsed = cell.get_or_init(|| {
        let Some(value) = crate::io::env_text(var)? else { return Ok(None) };
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            name => choices.iter().find(|(n, _)| *n == name).map(|&(_, t)| Some(t)).ok_or(value),
        }
    });
    parsed.clone().map_err(|value| {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let (last, rest) = names.split_last().map_or(("", &[][..]), |(l, r)| (*l, r));
        let expected = format!("auto, {} or {last}", rest.join(", "));
        crate::Error::invalid(var, format!("is `{value}`; expected {expected}"))
    })
}

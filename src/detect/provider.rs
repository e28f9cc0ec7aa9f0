//! Execution providers: where inference runs. The CPU always; CUDA, TensorRT and OpenVINO when
//! this build has the cargo feature of that name (which turns on ort's) and the ONNX Runtime
//! library was built with them. A provider that is not there refuses the start, naming the
//! key, unless `model.provider_fallback` lets it run on the CPU instead (logged).

use super::DetectError;
use crate::config::{ModelConfig, Provider};
use ort::session::builder::SessionBuilder;
use tracing::warn;

/// `builder` with `config`'s provider, and the name of the provider inference will use.
pub fn apply(builder: SessionBuilder, config: &ModelConfig) -> Result<(SessionBuilder, &'static str), DetectError> {
    let wanted = match config.provider {
        Provider::Cpu => return Ok((builder, "cpu")),
        Provider::Cuda => "cuda",
        Provider::Tensorrt => "tensorrt",
        Provider::Openvino => "openvino",
    };
    let refused = |reason: String| DetectError::Provider { key: config.key.clone(), provider: wanted, reason };
    let registered = match dispatch(config.provider) {
        Err(reason) => Err((builder, reason)),
        Ok((ep, true)) => builder.with_execution_providers([ep.error_on_failure()]).map_err(|e| {
            let reason = e.to_string();
            (e.recover(), reason)
        }),
        Ok((_, false)) => Err((
            builder,
            format!("the ONNX Runtime library has no {wanted} execution provider (a build with it is needed)"),
        )),
    };
    match registered {
        Ok(builder) => Ok((builder, wanted)),
        Err((builder, reason)) if config.provider_fallback => {
            warn!(model = %config.key, provider = wanted, %reason, "provider not available; running on the CPU (provider_fallback)");
            Ok((builder, "cpu"))
        }
        Err((_, reason)) => Err(refused(reason)),
    }
}

/// The provider's registration and whether the runtime library has it, or why not.
fn dispatch(provider: Provider) -> Result<(ort::ep::ExecutionProviderDispatch, bool), String> {
    #[allow(unused_imports)]
    use ort::ep::ExecutionProvider as _;
    #[allow(unused)]
    let missing = |feature: &str| -> Result<(ort::ep::ExecutionProviderDispatch, bool), String> {
        Err(format!("this build has no {feature} support (build with --features {feature})"))
    };
    #[allow(unused)]
    let with = |ep: ort::ep::ExecutionProviderDispatch, available: ort::Result<bool>| {
        available.map(|a| (ep, a)).map_err(|e| e.to_string())
    };
    match provider {
        Provider::Cpu => Ok((ort::ep::CPU::default().build(), true)),
        #[cfg(feature = "cuda")]
        Provider::Cuda => with(ort::ep::CUDA::default().build(), ort::ep::CUDA::is_available()),
        #[cfg(not(feature = "cuda"))]
        Provider::Cuda => missing("cuda"),
        #[cfg(feature = "tensorrt")]
        Provider::Tensorrt => with(ort::ep::TensorRT::default().build(), ort::ep::TensorRT::is_available()),
        #[cfg(not(feature = "tensorrt"))]
        Provider::Tensorrt => missing("tensorrt"),
        #[cfg(feature = "openvino")]
        Provider::Openvino => with(ort::ep::OpenVINO::default().build(), ort::ep::OpenVINO::is_available()),
        #[cfg(not(feature = "openvino"))]
        Provider::Openvino => missing("openvino"),
    }
}

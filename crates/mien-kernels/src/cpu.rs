//! The CPU features that decide which kernels tract picks, as this process sees them (under qemu-user:
//! the emulated core's).

/// Architecture name and each relevant feature with whether it is present.
pub fn features() -> (&'static str, Vec<(&'static str, bool)>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        (
            "x86_64",
            vec![
                ("avx2", has!("avx2")),
                ("fma", has!("fma")),
                ("f16c", has!("f16c")),
                ("avx512f", has!("avx512f")),
                ("avx512vnni", has!("avx512vnni")),
            ],
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        (
            "aarch64",
            vec![
                ("neon", has!("neon")),
                ("dotprod", has!("dotprod")),
                ("fp16", has!("fp16")),
                ("i8mm", has!("i8mm")),
            ],
        )
    }
    #[cfg(target_arch = "arm")]
    {
        // tract decides NEON on armv7 from /proc/cpuinfo, or TRACT_CPU_ARM32_NEON.
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let neon = std::env::var("TRACT_CPU_ARM32_NEON")
            .map(|v| v == "true")
            .unwrap_or(false)
            || cpuinfo
                .lines()
                .any(|l| l.starts_with("Features") && l.split_whitespace().any(|f| f == "neon"));
        ("armv7", vec![("neon", neon)])
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
    {
        (std::env::consts::ARCH, vec![])
    }
}

/// `arch: feature, feature, ...` listing only the present features.
pub fn summary() -> String {
    let (arch, features) = features();
    let present: Vec<&str> = features
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    format!(
        "{arch}: {}",
        if present.is_empty() {
            "-".to_string()
        } else {
            present.join(", ")
        }
    )
}

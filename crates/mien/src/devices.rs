//! `mien devices`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

/// Arguments of `mien devices`.
#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// One JSON array on stdout: path, name, driver, bus, capture, formats (fourcc, description,
    /// mien_format, sizes).
    #[arg(long)]
    json: bool,
}

pub fn run(args: DevicesArgs) -> Result<ExitCode> {
    let devices = match mien_capture::list_devices() {
        Ok(d) => d,
        Err(mien_capture::CaptureError::NoDevices) if args.json => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&devices)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for device in &devices {
        let kind = if device.capture { "capture" } else { "not capture" };
        writeln!(out, "{}  {} ({}, {}) [{kind}]", device.path.display(), device.name, device.driver, device.bus)?;
        if let Some(error) = &device.error {
            writeln!(out, "    error: {error}")?;
        }
        for format in &device.formats {
            let usable = match format.mien_format {
                Some(f) => format!("--format {f}"),
                None => "not read by mien".to_string(),
            };
            let sizes: Vec<String> = format.sizes.iter().map(|s| s.to_string()).collect();
            writeln!(out, "    {:<4} {:<28} {usable}", format.fourcc, format.description)?;
            if !sizes.is_empty() {
                writeln!(out, "         {}", sizes.join("  "))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The pre-generated bindings against the target's own C view of `linux/videodev2.h`: for the structs
//! the camera path passes to ioctls (whose request numbers encode their sizes), their size, alignment and
//! field offsets as this build of the bindings sees them are written out as C `_Static_assert`s and
//! compiled with the target's C compiler against its installed kernel headers. A stale or wrong-target
//! binding fails here, not on a camera.
//!
//! The compiler is `$V4L2_SYS_CC`, else the Debian cross compiler for the target (`cc` on x86-64). Under
//! qemu-user the test still runs it as a host program. Missing, the test is skipped with a message, or
//! fails under `CI=true`.

use std::mem::{align_of, offset_of, size_of};
use std::process::Command;

use v4l2_sys_mit::*;

fn compiler() -> String {
    if let Ok(cc) = std::env::var("V4L2_SYS_CC") {
        return cc;
    }
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-linux-gnu-gcc",
        "arm" => "arm-linux-gnueabihf-gcc",
        _ => "cc",
    }
    .to_string()
}

/// One `_Static_assert` per fact, named so a failure says which.
struct Checks(String);

impl Checks {
    fn fact(&mut self, expr: &str, value: usize) {
        self.0.push_str(&format!("_Static_assert({expr} == {value}, \"{expr} is {value} in the Rust bindings\");\n"));
    }
    fn layout<T>(&mut self, c_type: &str) {
        self.fact(&format!("sizeof({c_type})"), size_of::<T>());
        self.fact(&format!("_Alignof({c_type})"), align_of::<T>());
    }
    fn offset(&mut self, c_type: &str, field: &str, value: usize) {
        self.fact(&format!("offsetof({c_type}, {field})"), value);
    }
}

#[test]
fn bindings_match_the_target_c_compilers_kernel_headers() {
    let mut c = Checks(String::from("#include <stddef.h>\n#include <time.h>\n#include <sys/time.h>\n#include <linux/videodev2.h>\n"));
    c.layout::<v4l2_capability>("struct v4l2_capability");
    c.offset("struct v4l2_capability", "capabilities", offset_of!(v4l2_capability, capabilities));
    c.offset("struct v4l2_capability", "device_caps", offset_of!(v4l2_capability, device_caps));
    c.layout::<v4l2_format>("struct v4l2_format");
    c.offset("struct v4l2_format", "fmt", offset_of!(v4l2_format, fmt));
    c.layout::<v4l2_pix_format>("struct v4l2_pix_format");
    c.offset("struct v4l2_pix_format", "bytesperline", offset_of!(v4l2_pix_format, bytesperline));
    c.offset("struct v4l2_pix_format", "colorspace", offset_of!(v4l2_pix_format, colorspace));
    c.offset("struct v4l2_pix_format", "quantization", offset_of!(v4l2_pix_format, quantization));
    c.layout::<v4l2_pix_format_mplane>("struct v4l2_pix_format_mplane");
    c.layout::<v4l2_buffer>("struct v4l2_buffer");
    c.offset("struct v4l2_buffer", "timestamp", offset_of!(v4l2_buffer, timestamp));
    c.offset("struct v4l2_buffer", "sequence", offset_of!(v4l2_buffer, sequence));
    c.offset("struct v4l2_buffer", "memory", offset_of!(v4l2_buffer, memory));
    c.offset("struct v4l2_buffer", "m", offset_of!(v4l2_buffer, m));
    c.offset("struct v4l2_buffer", "length", offset_of!(v4l2_buffer, length));
    c.layout::<v4l2_plane>("struct v4l2_plane");
    c.layout::<v4l2_requestbuffers>("struct v4l2_requestbuffers");
    c.layout::<v4l2_fmtdesc>("struct v4l2_fmtdesc");
    c.offset("struct v4l2_fmtdesc", "pixelformat", offset_of!(v4l2_fmtdesc, pixelformat));
    c.layout::<v4l2_frmsizeenum>("struct v4l2_frmsizeenum");
    c.layout::<v4l2_frmivalenum>("struct v4l2_frmivalenum");
    c.layout::<v4l2_streamparm>("struct v4l2_streamparm");
    c.layout::<v4l2_captureparm>("struct v4l2_captureparm");
    c.layout::<v4l2_fract>("struct v4l2_fract");
    c.layout::<v4l2_control>("struct v4l2_control");
    c.layout::<v4l2_queryctrl>("struct v4l2_queryctrl");
    c.layout::<v4l2_query_ext_ctrl>("struct v4l2_query_ext_ctrl");
    c.layout::<v4l2_querymenu>("struct v4l2_querymenu");
    c.layout::<v4l2_ext_control>("struct v4l2_ext_control");
    c.layout::<v4l2_ext_controls>("struct v4l2_ext_controls");
    c.layout::<v4l2_input>("struct v4l2_input");
    c.layout::<v4l2_output>("struct v4l2_output");
    c.layout::<v4l2_timecode>("struct v4l2_timecode");
    c.layout::<v4l2_exportbuffer>("struct v4l2_exportbuffer");
    c.layout::<v4l2_event>("struct v4l2_event");
    c.layout::<v4l2_selection>("struct v4l2_selection");
    c.layout::<v4l2_cropcap>("struct v4l2_cropcap");
    let cc = compiler();
    let dir = std::env::temp_dir().join(format!("v4l2-sys-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("layout.c");
    std::fs::write(&source, &c.0).unwrap();
    let output = Command::new(&cc).arg("-fsyntax-only").arg("-std=gnu11").arg(&source).output();
    std::fs::remove_dir_all(&dir).ok();
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            let why = format!("the target C compiler `{cc}` cannot be run ({e}); set V4L2_SYS_CC");
            if matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")) {
                panic!("CI=true and {why}");
            }
            eprintln!("SKIPPED bindings_match_the_target_c_compilers_kernel_headers: {why}");
            return;
        }
    };
    assert!(
        output.status.success(),
        "the bindings disagree with {cc}'s linux/videodev2.h (regenerate with tools/gen_v4l2_bindings.sh):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

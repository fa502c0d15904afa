//! `kernelArguments`: checked, not applied. The kernel command line is built into the signed
//! UKI (and systemd-stub ignores loader-supplied options under Secure Boot), so nothing on
//! the node can change it. A config whose wishes the running command line already meets
//! passes; any other fails the boot before anything is written, naming the entry and why.

use keelson_config::Config;

use super::ApplyError;
use crate::providers::split_cmdline;

/// Whether `arg` (one or more words, in that exact order) is on the command line `words`.
fn present(words: &[String], arg: &str) -> bool {
    let want = split_cmdline(arg);
    !want.is_empty() && words.windows(want.len()).any(|w| w == want.as_slice())
}

/// Check `kernelArguments` against `cmdline` (the contents of /proc/cmdline).
pub fn check_kernel_arguments(config: &Config, cmdline: &str) -> Result<(), ApplyError> {
    let words = split_cmdline(cmdline);
    let ka = &config.kernel_arguments;
    for (i, arg) in ka.should_exist.iter().enumerate() {
        if !present(&words, arg) {
            return Err(ApplyError::Invalid {
                field: format!("$.kernelArguments.shouldExist[{i}]"),
                reason: format!(
                    "{arg:?} is not on the kernel command line, and Keelson cannot add it: the command line is part of the signed UKI (systemd-stub ignores loader options under Secure Boot); put it in the image's os.yaml cmdline instead"
                ),
            });
        }
    }
    for (i, arg) in ka.should_not_exist.iter().enumerate() {
        if present(&words, arg) {
            return Err(ApplyError::Invalid {
                field: format!("$.kernelArguments.shouldNotExist[{i}]"),
                reason: format!(
                    "{arg:?} is on the kernel command line, and Keelson cannot remove it: the command line is part of the signed UKI (systemd-stub ignores loader options under Secure Boot); remove it from the image's os.yaml cmdline instead"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CMDLINE: &str = "console=ttyS0 mount.usrfstype=erofs root=PARTLABEL=root rw quiet foo=\"a b\" mitigations=auto nosmt\n";

    fn config(exist: &[&str], not: &[&str]) -> Config {
        serde_json::from_value(serde_json::json!({
            "ignition": {"version": "3.6.0"},
            "kernelArguments": {"shouldExist": exist, "shouldNotExist": not}
        }))
        .unwrap()
    }

    #[test]
    fn met_wishes_pass_and_others_name_the_entry() {
        let cases: &[(&[&str], &[&str], Option<&str>)] = &[
            (&[], &[], None),
            (&["console=ttyS0", "rw"], &[], None),
            // Multi-word entries: those words, adjacent, in that order.
            (&["mitigations=auto nosmt"], &[], None),
            (&["foo=\"a b\""], &[], None),
            (
                &["nosmt mitigations=auto"],
                &[],
                Some("$.kernelArguments.shouldExist[0]"),
            ),
            (
                &["rw", "console"],
                &[],
                Some("$.kernelArguments.shouldExist[1]"),
            ),
            (&[], &["selinux=1", "console=tty0", "root"], None),
            (&[], &["quiet"], Some("$.kernelArguments.shouldNotExist[0]")),
            (
                &[],
                &["x", "rw quiet"],
                Some("$.kernelArguments.shouldNotExist[1]"),
            ),
        ];
        for (exist, not, want) in cases {
            let got = check_kernel_arguments(&config(exist, not), CMDLINE);
            match want {
                None => assert!(got.is_ok(), "{exist:?} {not:?}: {got:?}"),
                Some(field) => {
                    let err = got.unwrap_err().to_string();
                    assert!(
                        err.starts_with(&format!("{field}: ")) && err.contains("UKI"),
                        "{exist:?} {not:?}: {err}"
                    );
                }
            }
        }
        let err = check_kernel_arguments(&config(&["nomodeset"], &[]), CMDLINE)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nomodeset\" is not on the kernel command line"),
            "{err}"
        );
        assert!(err.contains("cannot add it"), "{err}");
    }
}

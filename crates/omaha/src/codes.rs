//! Event types, event results and update_engine error codes with their flag bits.
//!
//! Numbers are from Flatcar's update_engine (`omaha_request_action.h` `OmahaEvent`,
//! `action_processor.h` `ActionExitCode`). Unknown numbers are kept, not rejected: a newer
//! client must still be able to report, and the server stores what it got.

use std::fmt;

/// `event@eventtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// 0: `kTypeUnknown`.
    Unknown,
    /// 1: `kTypeDownloadComplete`.
    DownloadComplete,
    /// 2: `kTypeInstallComplete`.
    InstallComplete,
    /// 3: `kTypeUpdateComplete`: success, success-reboot (previous version), error or deferral.
    UpdateComplete,
    /// 13: `kTypeUpdateDownloadStarted`.
    UpdateDownloadStarted,
    /// 14: `kTypeUpdateDownloadFinished`.
    UpdateDownloadFinished,
    /// 800: Nebraska's "installed, completion held by the instance"; update_engine never sends it.
    InstanceHold,
    /// Any other number, kept as sent.
    Other(u32),
}

impl EventType {
    /// The wire number.
    pub fn code(self) -> u32 {
        match self {
            Self::Unknown => 0,
            Self::DownloadComplete => 1,
            Self::InstallComplete => 2,
            Self::UpdateComplete => 3,
            Self::UpdateDownloadStarted => 13,
            Self::UpdateDownloadFinished => 14,
            Self::InstanceHold => 800,
            Self::Other(n) => n,
        }
    }

    /// The variant for a wire number (numbers with a name never become `Other`).
    pub fn from_code(n: u32) -> Self {
        match n {
            0 => Self::Unknown,
            1 => Self::DownloadComplete,
            2 => Self::InstallComplete,
            3 => Self::UpdateComplete,
            13 => Self::UpdateDownloadStarted,
            14 => Self::UpdateDownloadFinished,
            800 => Self::InstanceHold,
            n => Self::Other(n),
        }
    }
}

/// `event@eventresult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventResult {
    /// 0: `kResultError`; `errorcode` says why.
    Error,
    /// 1: `kResultSuccess`.
    Success,
    /// 2: `kResultSuccessReboot`: sent with every update check, carrying `previousversion`.
    SuccessReboot,
    /// 9: `kResultUpdateDeferred`: backoff or policy on the client held the update back.
    UpdateDeferred,
    /// Any other number, kept as sent.
    Other(u32),
}

impl EventResult {
    /// The wire number.
    pub fn code(self) -> u32 {
        match self {
            Self::Error => 0,
            Self::Success => 1,
            Self::SuccessReboot => 2,
            Self::UpdateDeferred => 9,
            Self::Other(n) => n,
        }
    }

    /// The variant for a wire number (numbers with a name never become `Other`).
    pub fn from_code(n: u32) -> Self {
        match n {
            0 => Self::Error,
            1 => Self::Success,
            2 => Self::SuccessReboot,
            9 => Self::UpdateDeferred,
            n => Self::Other(n),
        }
    }
}

/// The flag bits update_engine ORs onto an error code (`kSpecialFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ErrorFlags {
    /// Bit 31, `kActionCodeDevModeFlag`: the machine is not in normal boot mode.
    pub dev_mode: bool,
    /// Bit 30, `kActionCodeResumedFlag`: the failed attempt resumed an interrupted download.
    pub resumed: bool,
    /// Bit 29, `kActionCodeTestImageFlag`: a test/dev-signed image.
    pub test_image: bool,
    /// Bit 28, `kActionCodeTestOmahaUrlFlag`: not the production Omaha URL.
    pub test_omaha_url: bool,
}

impl ErrorFlags {
    /// Bit 31.
    pub const DEV_MODE: u32 = 1 << 31;
    /// Bit 30.
    pub const RESUMED: u32 = 1 << 30;
    /// Bit 29.
    pub const TEST_IMAGE: u32 = 1 << 29;
    /// Bit 28.
    pub const TEST_OMAHA_URL: u32 = 1 << 28;
    /// All four flag bits (`kSpecialFlags`).
    pub const MASK: u32 = Self::DEV_MODE | Self::RESUMED | Self::TEST_IMAGE | Self::TEST_OMAHA_URL;

    /// The flags set in a raw code.
    pub fn from_bits(raw: u32) -> Self {
        Self {
            dev_mode: raw & Self::DEV_MODE != 0,
            resumed: raw & Self::RESUMED != 0,
            test_image: raw & Self::TEST_IMAGE != 0,
            test_omaha_url: raw & Self::TEST_OMAHA_URL != 0,
        }
    }

    /// The bits these flags occupy.
    pub fn bits(self) -> u32 {
        (if self.dev_mode { Self::DEV_MODE } else { 0 })
            | (if self.resumed { Self::RESUMED } else { 0 })
            | (if self.test_image { Self::TEST_IMAGE } else { 0 })
            | (if self.test_omaha_url {
                Self::TEST_OMAHA_URL
            } else {
                0
            })
    }
}

/// `event@errorcode`: an update_engine `ActionExitCode` with flag bits, stored as the raw
/// 32-bit value.
///
/// update_engine formats the code with `%d`, so a code with the dev-mode bit arrives as a
/// negative number; parsing accepts both signed and unsigned spellings and writing always
/// uses the unsigned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// `kActionCodeRollbackError` (44): the new slot failed to boot and GRUB fell back. Sent
    /// as event 3/0 at the next update check; the server counts it as a failed update.
    pub const ROLLBACK: ErrorCode = ErrorCode(44);
    /// `kActionCodeOmahaRequestHTTPResponseBase` (2000): HTTP failures are 2000 + status.
    pub const HTTP_RESPONSE_BASE: u32 = 2000;

    /// The code without flag bits.
    pub fn base(self) -> u32 {
        self.0 & !ErrorFlags::MASK
    }

    /// The flag bits.
    pub fn flags(self) -> ErrorFlags {
        ErrorFlags::from_bits(self.0)
    }

    /// Splits into (base code, flags).
    pub fn decode(self) -> (u32, ErrorFlags) {
        (self.base(), self.flags())
    }

    /// Joins a base code and flags.
    pub fn encode(base: u32, flags: ErrorFlags) -> Self {
        Self((base & !ErrorFlags::MASK) | flags.bits())
    }

    /// The named exit code, if the base is one update_engine defines.
    pub fn exit_code(self) -> Option<ExitCode> {
        ExitCode::from_code(self.base())
    }

    /// The HTTP status for a 2000+status code.
    pub fn http_status(self) -> Option<u16> {
        let base = self.base();
        if (Self::HTTP_RESPONSE_BASE + 100..Self::HTTP_RESPONSE_BASE + 1000).contains(&base) {
            u16::try_from(base - Self::HTTP_RESPONSE_BASE).ok()
        } else {
            None
        }
    }

    /// Parses the attribute text: decimal, signed (`%d`) or unsigned.
    pub fn parse(text: &str) -> Option<Self> {
        let n: i64 = text.trim().parse().ok()?;
        if let Ok(u) = u32::try_from(n) {
            Some(Self(u))
        } else {
            // Negative: the two's-complement reading of update_engine's `%d`.
            i32::try_from(n).ok().map(|i| Self(i.cast_unsigned()))
        }
    }
}

impl fmt::Display for ErrorCode {
    /// `44 (kActionCodeRollbackError)`, `34 (kActionCodeOmahaResponseInvalid) | TestOmahaUrl`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.base();
        write!(f, "{base}")?;
        if let Some(code) = self.exit_code() {
            write!(f, " ({})", code.name())?;
        } else if let Some(status) = self.http_status() {
            write!(f, " (HTTP {status})")?;
        }
        let flags = self.flags();
        for (set, name) in [
            (flags.dev_mode, "DevMode"),
            (flags.resumed, "Resumed"),
            (flags.test_image, "TestImage"),
            (flags.test_omaha_url, "TestOmahaUrl"),
        ] {
            if set {
                write!(f, " | {name}")?;
            }
        }
        Ok(())
    }
}

macro_rules! exit_codes {
    ($($(#[$doc:meta])* $variant:ident = $num:literal,)*) => {
        /// update_engine's `ActionExitCode` values (without flags), named as in its source.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ExitCode {
            $($(#[$doc])* $variant,)*
        }

        impl ExitCode {
            /// The number.
            pub fn code(self) -> u32 {
                match self { $(Self::$variant => $num,)* }
            }

            /// The named code for a number.
            pub fn from_code(n: u32) -> Option<Self> {
                match n { $($num => Some(Self::$variant),)* _ => None }
            }

            /// update_engine's identifier, e.g. `kActionCodeRollbackError`.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => concat!("kActionCode", stringify!($variant)),)* }
            }

            /// Every named code, in numeric order.
            pub const ALL: &[ExitCode] = &[$(Self::$variant,)*];
        }
    };
}

exit_codes! {
    /// 0.
    Success = 0,
    /// 1.
    Error = 1,
    /// 2.
    OmahaRequestError = 2,
    /// 3.
    OmahaResponseHandlerError = 3,
    /// 4.
    FilesystemCopierError = 4,
    /// 5.
    PostinstallRunnerError = 5,
    /// 6 (unused by update_engine).
    SetBootableFlagError = 6,
    /// 7.
    InstallDeviceOpenError = 7,
    /// 8.
    KernelDeviceOpenError = 8,
    /// 9: the payload download failed.
    DownloadTransferError = 9,
    /// 10: the payload's SHA-256 differs from the response's `sha256`.
    PayloadHashMismatchError = 10,
    /// 11: the payload's size differs from the package `size`.
    PayloadSizeMismatchError = 11,
    /// 12.
    DownloadPayloadVerificationError = 12,
    /// 13.
    DownloadNewPartitionInfoError = 13,
    /// 14.
    DownloadWriteError = 14,
    /// 15: the written /usr does not verify.
    NewRootfsVerificationError = 15,
    /// 16.
    NewKernelVerificationError = 16,
    /// 17.
    SignedDeltaPayloadExpectedError = 17,
    /// 18: the payload signature does not verify against the public key.
    DownloadPayloadPubKeyVerificationError = 18,
    /// 19.
    PostinstallBootedFromFirmwareB = 19,
    /// 20.
    DownloadStateInitializationError = 20,
    /// 21.
    DownloadInvalidMetadataMagicString = 21,
    /// 22.
    DownloadSignatureMissingInManifest = 22,
    /// 23.
    DownloadManifestParseError = 23,
    /// 24.
    DownloadMetadataSignatureError = 24,
    /// 25.
    DownloadMetadataSignatureVerificationError = 25,
    /// 26.
    DownloadMetadataSignatureMismatch = 26,
    /// 27.
    DownloadOperationHashVerificationError = 27,
    /// 28.
    DownloadOperationExecutionError = 28,
    /// 29.
    DownloadOperationHashMismatch = 29,
    /// 30: the response body was empty.
    OmahaRequestEmptyResponseError = 30,
    /// 31: the response was not XML.
    OmahaRequestXMLParseError = 31,
    /// 32.
    DownloadInvalidMetadataSize = 32,
    /// 33.
    DownloadInvalidMetadataSignature = 33,
    /// 34: the response lacked something update_engine needs (or had an `error-*` status).
    OmahaResponseInvalid = 34,
    /// 35.
    OmahaUpdateIgnoredPerPolicy = 35,
    /// 36.
    OmahaUpdateDeferredPerPolicy = 36,
    /// 37.
    OmahaErrorInHTTPResponse = 37,
    /// 38.
    DownloadOperationHashMissingError = 38,
    /// 39.
    DownloadMetadataSignatureMissingError = 39,
    /// 40: deferred for download backoff.
    OmahaUpdateDeferredForBackoff = 40,
    /// 41.
    PostinstallPowerwashError = 41,
    /// 42 (Flatcar): the new TPM PCR policy does not verify.
    NewPCRPolicyVerificationError = 42,
    /// 43 (Flatcar): posting the PCR policy failed.
    NewPCRPolicyHTTPError = 43,
    /// 44 (Flatcar): the updated slot did not boot and GRUB fell back to the old one.
    RollbackError = 44,
    /// 100: internal "needs more data"; never meant to be reported.
    DownloadIncomplete = 100,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn error_code_table() {
        // (wire text, base, flags bits, display)
        let cases: &[(&str, u32, u32, &str)] = &[
            ("0", 0, 0, "0 (kActionCodeSuccess)"),
            ("44", 44, 0, "44 (kActionCodeRollbackError)"),
            // nebraska#371: 34 | TestOmahaUrl.
            (
                "268435490",
                34,
                ErrorFlags::TEST_OMAHA_URL,
                "34 (kActionCodeOmahaResponseInvalid) | TestOmahaUrl",
            ),
            // Dev mode + resumed, as update_engine's %d prints it.
            (
                "-1073741815",
                9,
                ErrorFlags::DEV_MODE | ErrorFlags::RESUMED,
                "9 (kActionCodeDownloadTransferError) | DevMode | Resumed",
            ),
            (
                "3221225481",
                9,
                ErrorFlags::DEV_MODE | ErrorFlags::RESUMED,
                "9 (kActionCodeDownloadTransferError) | DevMode | Resumed",
            ),
            ("2404", 2404, 0, "2404 (HTTP 404)"),
            ("536871011", 99, ErrorFlags::TEST_IMAGE, "99 | TestImage"),
        ];
        for (text, base, flags, shown) in cases {
            let code = ErrorCode::parse(text).unwrap();
            assert_eq!(
                code.decode(),
                (*base, ErrorFlags::from_bits(*flags)),
                "{text}"
            );
            assert_eq!(code.to_string(), *shown, "{text}");
            assert_eq!(
                ErrorCode::encode(*base, ErrorFlags::from_bits(*flags)),
                code
            );
        }
        for bad in ["", "x", "1.5", "4294967296", "-2147483649", "0x10"] {
            assert_eq!(ErrorCode::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rollback_is_44_rollback_error() {
        assert_eq!(
            ErrorCode::ROLLBACK.exit_code(),
            Some(ExitCode::RollbackError)
        );
        assert_eq!(ExitCode::RollbackError.name(), "kActionCodeRollbackError");
    }

    #[test]
    fn exit_codes_are_numbered_uniquely_and_round_trip() {
        for code in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(code.code()), Some(*code));
        }
        assert_eq!(ExitCode::ALL.len(), 46);
        assert_eq!(ExitCode::from_code(45), None);
    }

    #[test]
    fn event_numbers_round_trip() {
        for n in [0, 1, 2, 3, 9, 13, 14, 800, 801, u32::MAX] {
            assert_eq!(EventType::from_code(n).code(), n);
            assert_eq!(EventResult::from_code(n).code(), n);
        }
        assert_eq!(EventType::from_code(3), EventType::UpdateComplete);
        assert_eq!(EventResult::from_code(9), EventResult::UpdateDeferred);
    }
}

//! CTAP status codes: the first byte of every CTAP response (CTAP 2.2 §8, "Status codes").
//!
//! [`CtapStatus`] is lossless: every byte converts to a status and back to the same byte. Codes
//! the spec names get a variant; the extension range 0xE0–0xEF, the vendor range 0xF0–0xFF and
//! every unassigned byte are kept in [`CtapStatus::Extension`], [`CtapStatus::Vendor`] and
//! [`CtapStatus::Unknown`]. The list follows CTAP 2.1/2.2; codes that only CTAP 2.0 defined
//! (0x10, 0x13, 0x16, 0x29, 0x2A, 0x38) are [`CtapStatus::Unknown`].

use core::fmt;

macro_rules! statuses {
    ($($(#[doc = $doc:literal])* $variant:ident = $byte:literal, $name:literal;)*) => {
        /// A CTAP status byte (CTAP 2.2 §8, "Status codes").
        ///
        /// Equality and hashing compare the byte, so a hand-built `Unknown(0x27)` equals
        /// [`CtapStatus::OperationDenied`]; [`From<u8>`] always picks the named variant.
        #[derive(Clone, Copy, Debug)]
        pub enum CtapStatus {
            $($(#[doc = $doc])* $variant,)*
            /// An extension-specific error, 0xE0 (`CTAP2_ERR_EXTENSION_FIRST`) to 0xEF
            /// (`CTAP2_ERR_EXTENSION_LAST`).
            Extension(u8),
            /// A vendor-specific error, 0xF0 (`CTAP2_ERR_VENDOR_FIRST`) to 0xFF
            /// (`CTAP2_ERR_VENDOR_LAST`).
            Vendor(u8),
            /// A byte the spec does not assign.
            Unknown(u8),
        }

        impl From<u8> for CtapStatus {
            fn from(byte: u8) -> Self {
                match byte {
                    $($byte => Self::$variant,)*
                    0xe0..=0xef => Self::Extension(byte),
                    0xf0..=0xff => Self::Vendor(byte),
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<CtapStatus> for u8 {
            fn from(status: CtapStatus) -> Self {
                match status {
                    $(CtapStatus::$variant => $byte,)*
                    CtapStatus::Extension(byte)
                    | CtapStatus::Vendor(byte)
                    | CtapStatus::Unknown(byte) => byte,
                }
            }
        }

        impl CtapStatus {
            /// The spec's name, e.g. `"CTAP2_ERR_OPERATION_DENIED"`. Extension and vendor
            /// codes give `"CTAP2_ERR_EXTENSION"` / `"CTAP2_ERR_VENDOR"` (with `_FIRST` or
            /// `_LAST` at the ends of the ranges); unassigned bytes give `"UNKNOWN"`.
            pub fn name(self) -> &'static str {
                match CtapStatus::from(u8::from(self)) {
                    $(Self::$variant => $name,)*
                    Self::Extension(0xe0) => "CTAP2_ERR_EXTENSION_FIRST",
                    Self::Extension(0xef) => "CTAP2_ERR_EXTENSION_LAST",
                    Self::Extension(_) => "CTAP2_ERR_EXTENSION",
                    Self::Vendor(0xf0) => "CTAP2_ERR_VENDOR_FIRST",
                    Self::Vendor(0xff) => "CTAP2_ERR_VENDOR_LAST",
                    Self::Vendor(_) => "CTAP2_ERR_VENDOR",
                    Self::Unknown(_) => "UNKNOWN",
                }
            }
        }
    };
}

statuses! {
    /// Success (`CTAP1_ERR_SUCCESS`, `CTAP2_OK`).
    Ok = 0x00, "CTAP2_OK";
    /// The command is not a valid CTAP command.
    InvalidCommand = 0x01, "CTAP1_ERR_INVALID_COMMAND";
    /// The command included an invalid parameter.
    InvalidParameter = 0x02, "CTAP1_ERR_INVALID_PARAMETER";
    /// Invalid message or item length.
    InvalidLength = 0x03, "CTAP1_ERR_INVALID_LENGTH";
    /// Invalid message sequencing.
    InvalidSeq = 0x04, "CTAP1_ERR_INVALID_SEQ";
    /// Message timed out.
    Timeout = 0x05, "CTAP1_ERR_TIMEOUT";
    /// Channel busy.
    ChannelBusy = 0x06, "CTAP1_ERR_CHANNEL_BUSY";
    /// Command requires channel lock.
    LockRequired = 0x0a, "CTAP1_ERR_LOCK_REQUIRED";
    /// Command not allowed on this channel.
    InvalidChannel = 0x0b, "CTAP1_ERR_INVALID_CHANNEL";
    /// Invalid or unexpected CBOR type.
    CborUnexpectedType = 0x11, "CTAP2_ERR_CBOR_UNEXPECTED_TYPE";
    /// Error when parsing CBOR.
    InvalidCbor = 0x12, "CTAP2_ERR_INVALID_CBOR";
    /// Missing non-optional parameter.
    MissingParameter = 0x14, "CTAP2_ERR_MISSING_PARAMETER";
    /// Limit for number of items exceeded.
    LimitExceeded = 0x15, "CTAP2_ERR_LIMIT_EXCEEDED";
    /// Fingerprint database is full.
    FpDatabaseFull = 0x17, "CTAP2_ERR_FP_DATABASE_FULL";
    /// Large blob storage is full.
    LargeBlobStorageFull = 0x18, "CTAP2_ERR_LARGE_BLOB_STORAGE_FULL";
    /// A credential in the exclude list is present on the authenticator.
    CredentialExcluded = 0x19, "CTAP2_ERR_CREDENTIAL_EXCLUDED";
    /// A lengthy operation is in progress.
    Processing = 0x21, "CTAP2_ERR_PROCESSING";
    /// Credential not valid for the authenticator.
    InvalidCredential = 0x22, "CTAP2_ERR_INVALID_CREDENTIAL";
    /// Waiting for user interaction.
    UserActionPending = 0x23, "CTAP2_ERR_USER_ACTION_PENDING";
    /// A lengthy operation is in progress.
    OperationPending = 0x24, "CTAP2_ERR_OPERATION_PENDING";
    /// No request is pending.
    NoOperations = 0x25, "CTAP2_ERR_NO_OPERATIONS";
    /// The requested algorithm is not supported.
    UnsupportedAlgorithm = 0x26, "CTAP2_ERR_UNSUPPORTED_ALGORITHM";
    /// Not authorized for the requested operation (the user declined, typically).
    OperationDenied = 0x27, "CTAP2_ERR_OPERATION_DENIED";
    /// Internal key storage is full.
    KeyStoreFull = 0x28, "CTAP2_ERR_KEY_STORE_FULL";
    /// Unsupported option.
    UnsupportedOption = 0x2b, "CTAP2_ERR_UNSUPPORTED_OPTION";
    /// Not a valid option for the current operation.
    InvalidOption = 0x2c, "CTAP2_ERR_INVALID_OPTION";
    /// The operation was cancelled.
    KeepaliveCancel = 0x2d, "CTAP2_ERR_KEEPALIVE_CANCEL";
    /// No valid credentials provided.
    NoCredentials = 0x2e, "CTAP2_ERR_NO_CREDENTIALS";
    /// A user action timed out.
    UserActionTimeout = 0x2f, "CTAP2_ERR_USER_ACTION_TIMEOUT";
    /// Continuation command not allowed.
    NotAllowed = 0x30, "CTAP2_ERR_NOT_ALLOWED";
    /// PIN invalid.
    PinInvalid = 0x31, "CTAP2_ERR_PIN_INVALID";
    /// PIN blocked.
    PinBlocked = 0x32, "CTAP2_ERR_PIN_BLOCKED";
    /// pinUvAuthParam verification failed.
    PinAuthInvalid = 0x33, "CTAP2_ERR_PIN_AUTH_INVALID";
    /// pinUvAuth blocked until power cycle.
    PinAuthBlocked = 0x34, "CTAP2_ERR_PIN_AUTH_BLOCKED";
    /// No PIN has been set.
    PinNotSet = 0x35, "CTAP2_ERR_PIN_NOT_SET";
    /// A pinUvAuthToken is required for this operation.
    PuatRequired = 0x36, "CTAP2_ERR_PUAT_REQUIRED";
    /// PIN policy violation.
    PinPolicyViolation = 0x37, "CTAP2_ERR_PIN_POLICY_VIOLATION";
    /// The authenticator cannot handle a request this large.
    RequestTooLarge = 0x39, "CTAP2_ERR_REQUEST_TOO_LARGE";
    /// The current operation timed out.
    ActionTimeout = 0x3a, "CTAP2_ERR_ACTION_TIMEOUT";
    /// User presence is required.
    UpRequired = 0x3b, "CTAP2_ERR_UP_REQUIRED";
    /// Built-in user verification is blocked.
    UvBlocked = 0x3c, "CTAP2_ERR_UV_BLOCKED";
    /// A checksum did not match.
    IntegrityFailure = 0x3d, "CTAP2_ERR_INTEGRITY_FAILURE";
    /// The subcommand is not valid.
    InvalidSubcommand = 0x3e, "CTAP2_ERR_INVALID_SUBCOMMAND";
    /// Built-in user verification failed.
    UvInvalid = 0x3f, "CTAP2_ERR_UV_INVALID";
    /// The permissions parameter contains an unauthorized permission.
    UnauthorizedPermission = 0x40, "CTAP2_ERR_UNAUTHORIZED_PERMISSION";
    /// Other unspecified error.
    Other = 0x7f, "CTAP1_ERR_OTHER";
    /// The last status code the spec reserves for itself.
    SpecLast = 0xdf, "CTAP2_ERR_SPEC_LAST";
}

impl CtapStatus {
    /// Whether this is `CTAP2_OK`.
    pub fn is_ok(self) -> bool {
        u8::from(self) == 0
    }
}

impl PartialEq for CtapStatus {
    fn eq(&self, other: &Self) -> bool {
        u8::from(*self) == u8::from(*other)
    }
}

impl Eq for CtapStatus {}

impl core::hash::Hash for CtapStatus {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        u8::from(*self).hash(state);
    }
}

/// `CTAP2_ERR_OPERATION_DENIED (0x27)`.
impl fmt::Display for CtapStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), u8::from(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_has_a_stable_name() {
        for byte in 0..=u8::MAX {
            let status = CtapStatus::from(byte);
            assert_eq!(u8::from(status), byte);
            assert!(!status.name().is_empty());
        }
    }

    #[test]
    fn named_codes_print_with_their_byte() {
        assert_eq!(
            CtapStatus::from(0x27).to_string(),
            "CTAP2_ERR_OPERATION_DENIED (0x27)"
        );
        assert_eq!(CtapStatus::from(0x00).to_string(), "CTAP2_OK (0x00)");
        assert_eq!(CtapStatus::from(0xe0).name(), "CTAP2_ERR_EXTENSION_FIRST");
        assert_eq!(
            CtapStatus::from(0xe5).to_string(),
            "CTAP2_ERR_EXTENSION (0xE5)"
        );
        assert_eq!(CtapStatus::from(0xff).name(), "CTAP2_ERR_VENDOR_LAST");
        assert_eq!(CtapStatus::from(0x38).to_string(), "UNKNOWN (0x38)");
        assert_eq!(CtapStatus::Unknown(0x27), CtapStatus::OperationDenied);
        assert_eq!(
            CtapStatus::Unknown(0x27).name(),
            "CTAP2_ERR_OPERATION_DENIED"
        );
    }
}

/// Names inside a checkpoint root directory (docs/checkpoint-format.md):
///
/// ```
/// DIR/
///   latest                    "step-00000120\n": the newest committed checkpoint
///   step-00000120/            a committed checkpoint
///     manifest.json           written last
///     layer-0000.blob …       one per layer
///     part-stage0.json …      the writers' part records (kept for the record)
///   .incoming-00000130/       a checkpoint being written (never read by restore)
///   .deleting-00000100/       a checkpoint being removed by retention
/// ```
public enum CheckpointLayout {
    public static let latestName = "latest"
    public static let stepPrefix = "step-"
    public static let incomingPrefix = ".incoming-"
    public static let deletingPrefix = ".deleting-"
    /// Steps are written with at least this many digits.
    public static let stepDigits = 8
    public static let maximumStep = 999_999_999_999
    public static let maximumLayerCount = 10_000
    /// 2^32 floats (16 GiB) per tensor.
    public static let maximumTensorElements = 1 << 32
    /// Part names: 1–64 of `A–Z a–z 0–9 _ . -`, not starting with a dot.
    public static let maximumPartNameLength = 64

    /// `step-00000120`.
    public static func stepDirectoryName(step: Int) -> String { stepPrefix + padded(step, stepDigits) }

    /// `.incoming-00000120`.
    public static func incomingDirectoryName(step: Int) -> String { incomingPrefix + padded(step, stepDigits) }

    /// `.deleting-00000120`.
    static func deletingDirectoryName(step: Int) -> String { deletingPrefix + padded(step, stepDigits) }

    /// `layer-0002.blob`.
    public static func blobName(layer: Int) -> String { "layer-" + padded(layer, 4) + ".blob" }

    /// `part-stage0.json`.
    public static func partRecordName(part: String) -> String { "part-\(part).json" }

    /// The step of `step-NNNNNNNN` (at least 8 digits, nothing else), or nil.
    public static func step(fromDirectoryName name: String) -> Int? { parseStep(name, prefix: stepPrefix) }

    /// The step of `.incoming-NNNNNNNN`, or nil.
    public static func step(fromIncomingName name: String) -> Int? { parseStep(name, prefix: incomingPrefix) }

    static func step(fromDeletingName name: String) -> Int? { parseStep(name, prefix: deletingPrefix) }

    public static func isValidPartName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= maximumPartNameLength, name.utf8.first != UInt8(ascii: ".") else { return false }
        return name.utf8.allSatisfy { isNameByte($0) }
    }

    /// Tensor names: 1–128 printable ASCII characters without quotes, slashes or backslashes
    /// (they become file names inside an npz and keys in Python).
    public static func isValidTensorName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 128 else { return false }
        return name.utf8.allSatisfy { isNameByte($0) }
    }

    private static func isNameByte(_ c: UInt8) -> Bool {
        (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "-")
    }

    private static func padded(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    private static func parseStep(_ name: String, prefix: String) -> Int? {
        guard name.hasPrefix(prefix) else { return nil }
        let digits = name.utf8.dropFirst(prefix.utf8.count)
        guard digits.count >= stepDigits, digits.count <= 12, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        guard let step = Int(Substring(digits)) else { return nil }
        // One spelling per step: no extra leading zeros beyond the padding.
        guard name == prefix + padded(step, stepDigits) else { return nil }
        return step
    }
}

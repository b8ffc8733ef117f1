#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a data set, a shard, an import or a training check was refused. Every message names the
/// file (and for CSV the line and column) and says what to do; nothing in this folder traps on
/// bad input.
public struct DatasetError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of check failed. Extensible: match on the codes you handle, treat others alike.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public var description: String { name }

        // Files and the file system.
        /// The directory has no `manifest.json`.
        public static let manifestMissing = Code(name: "manifestMissing")
        /// `manifest.json` is not valid JSON, or a field is missing or out of range.
        public static let manifestInvalid = Code(name: "manifestInvalid")
        /// A shard's header and the manifest disagree (range, counts, layout, size, checksum).
        public static let manifestMismatch = Code(name: "manifestMismatch")
        /// A shard the manifest lists is not there.
        public static let shardMissing = Code(name: "shardMissing")
        /// A file does not start with the expected magic bytes.
        public static let badMagic = Code(name: "badMagic")
        /// A shard or `.npy` format version this build does not read.
        public static let unsupportedVersion = Code(name: "unsupportedVersion")
        /// The shard header's CRC32C does not match its bytes.
        public static let headerChecksumMismatch = Code(name: "headerChecksumMismatch")
        /// The shard payload's CRC32C does not match its bytes.
        public static let payloadChecksumMismatch = Code(name: "payloadChecksumMismatch")
        /// A header field is inconsistent with the others (lengths, reserved fields).
        public static let invalidHeader = Code(name: "invalidHeader")
        /// A header claims counts beyond the limits (e.g. 2^40 samples).
        public static let implausibleHeader = Code(name: "implausibleHeader")
        /// A feature type, label layout or dtype this build does not read.
        public static let unsupportedLayout = Code(name: "unsupportedLayout")
        /// The file is shorter than its header says.
        public static let truncated = Code(name: "truncated")
        /// The file is longer than its header says.
        public static let trailingBytes = Code(name: "trailingBytes")
        /// A file exceeds the configured size limit.
        public static let tooLarge = Code(name: "tooLarge")
        /// A read, write, rename or fsync failed.
        public static let ioError = Code(name: "ioError")
        /// The destination already holds a data set.
        public static let alreadyExists = Code(name: "alreadyExists")

        // Contents.
        /// A class label is negative or not below the number of classes.
        public static let labelOutOfRange = Code(name: "labelOutOfRange")
        /// A feature is NaN or infinite.
        public static let nonFiniteFeature = Code(name: "nonFiniteFeature")
        /// A sample index outside [0, samples) was asked for.
        public static let indexOutOfRange = Code(name: "indexOutOfRange")
        /// Arguments that cannot describe a data set (no samples, 0 shards, arrays of the wrong length).
        public static let invalidArgument = Code(name: "invalidArgument")

        // Imports.
        /// A CSV file is malformed (bad number, ragged row, no data).
        public static let csvInvalid = Code(name: "csvInvalid")
        /// A `.npy` file is malformed or holds a shape or dtype that cannot be imported.
        public static let npyInvalid = Code(name: "npyInvalid")

        // Training checks.
        /// The data set's feature count differs from the model's input width.
        public static let featureCountMismatch = Code(name: "featureCountMismatch")
        /// The data set has more classes than the model has outputs.
        public static let classCountMismatch = Code(name: "classCountMismatch")
        /// The global batch does not fit in the data set.
        public static let batchTooLarge = Code(name: "batchTooLarge")
    }

    public var code: Code
    /// One or two sentences for the user: what happened, in which file, and what to do.
    public var message: String
    /// The file the error is about, when there is one.
    public var path: String?
    /// 1-based line and column, for text inputs (CSV).
    public var line: Int?
    public var column: Int?

    public init(_ code: Code, _ message: String, path: String? = nil, line: Int? = nil, column: Int? = nil) {
        self.code = code
        self.message = message
        self.path = path
        self.line = line
        self.column = column
    }

    public var description: String { message }
}

extension DatasetError {
    static func io(_ what: String, _ path: String, errno code: Int32) -> DatasetError {
        DatasetError(.ioError, "cannot \(what) \(path): \(String(cString: strerror(code)))", path: path)
    }
}

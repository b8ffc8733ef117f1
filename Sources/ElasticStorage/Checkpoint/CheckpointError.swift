/// Why a checkpoint could not be written, committed, read or exported. The message names the
/// checkpoint (and blob and tensor, where there is one), says what happened and what to do;
/// nothing in this folder traps on bad input.
public struct CheckpointError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of check failed. Extensible: match on the kinds you handle, treat others alike.
    /// Verification reports the same kinds per problem (`CheckpointProblem.check`).
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public var description: String { name }

        // Reading and verifying.
        /// The checkpoint directory does not exist or is not a directory.
        public static let notFound = Kind(name: "notFound")
        /// The directory has no `manifest.json`.
        public static let manifestMissing = Kind(name: "manifestMissing")
        /// `manifest.json` (or a part record) is not valid JSON, or a field is missing, out of
        /// range or inconsistent with another.
        public static let manifestInvalid = Kind(name: "manifestInvalid")
        /// A format version (or format name) this build does not read.
        public static let unsupportedVersion = Kind(name: "unsupportedVersion")
        /// A blob the manifest lists is not there.
        public static let blobMissing = Kind(name: "blobMissing")
        /// A blob's length differs from the manifest's (truncated or grown).
        public static let blobSize = Kind(name: "blobSize")
        /// XXH64 of a tensor's stored (compressed) bytes differs from the manifest's.
        public static let storedChecksum = Kind(name: "storedChecksum")
        /// A stored tensor does not decompress to its recorded size.
        public static let decompression = Kind(name: "decompression")
        /// XXH64 of a tensor's raw bytes, after decompression and the inverse transform,
        /// differs from the manifest's.
        public static let rawChecksum = Kind(name: "rawChecksum")
        /// A tensor's shape, dtype or size disagrees with its layer spec or its byte count.
        public static let shape = Kind(name: "shape")
        /// A read, write, rename, fsync or directory operation failed.
        public static let io = Kind(name: "io")

        // Writing and committing.
        /// Arguments that cannot describe a checkpoint (negative step, bad part name, …).
        public static let invalidArgument = Kind(name: "invalidArgument")
        /// Commit found layers missing from the part records (or written twice, or out of range).
        public static let incomplete = Kind(name: "incomplete")
        /// Commit found no `.incoming-<step>` directory.
        public static let nothingWritten = Kind(name: "nothingWritten")
        /// `step-<step>` already exists.
        public static let alreadyCommitted = Kind(name: "alreadyCommitted")
        /// zstd refused to compress (bad level, out of memory).
        public static let compression = Kind(name: "compression")
        /// A checkpoint cannot be exported in the asked format (e.g. an npz over 4 GiB).
        public static let exportUnsupported = Kind(name: "exportUnsupported")
    }

    public var kind: Kind
    /// One or two sentences for the user: what happened, where, and what to do.
    public var message: String
    /// The file or directory the error is about, when there is one.
    public var path: String?

    public init(_ kind: Kind, _ message: String, path: String? = nil) {
        self.kind = kind
        self.message = message
        self.path = path
    }

    public var description: String { message }
}

extension CheckpointError {
    /// Wraps a file-system failure from the shared file helpers, keeping its message.
    init(io error: DatasetError, doing what: String) {
        self.init(.io, "\(what): \(error.message); check that the disk is not full and the directory is writable", path: error.path)
    }
}

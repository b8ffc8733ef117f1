#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import ElasticNumerics

/// `part-<name>.json` in `.incoming-<step>`: what one writer (one pipeline stage) wrote. The
/// committer merges the part records into the manifest.
public struct CheckpointPart: Codable, Sendable, Equatable {
    public static let formatName = "elastic-checkpoint-part"
    /// Part records larger than this are refused unread.
    public static let maximumSize = 16 << 20

    /// Always "elastic-checkpoint-part".
    public var format: String
    public var formatVersion: Int
    public var step: Int
    public var part: String
    public var zstd: CheckpointCompressionInfo
    /// One per layer written, in the order given.
    public var blobs: [CheckpointBlobRecord]

    public init(step: Int, part: String, zstd: CheckpointCompressionInfo, blobs: [CheckpointBlobRecord]) {
        format = Self.formatName
        formatVersion = CheckpointManifest.currentVersion
        self.step = step
        self.part = part
        self.zstd = zstd
        self.blobs = blobs
    }

    public var rawBytes: Int { blobs.reduce(0) { $0 + $1.rawBytes } }
    public var storedBytes: Int { blobs.reduce(0) { $0 + $1.bytes } }

    static func decode(_ bytes: [UInt8], path: String) throws(CheckpointError) -> CheckpointPart {
        let part = try CheckpointJSON.decode(CheckpointPart.self, from: bytes, path: path, what: "checkpoint part record")
        guard part.format == formatName, part.formatVersion == CheckpointManifest.currentVersion else {
            throw CheckpointError(.unsupportedVersion, "\(path) is a '\(part.format)' record of version \(part.formatVersion); this build writes and commits '\(formatName)' version \(CheckpointManifest.currentVersion): run the same elastic on every worker", path: path)
        }
        for blob in part.blobs { try blob.validate(path: path) }
        return part
    }
}

extension CheckpointStore {
    /// Writes `layers` into `.incoming-<step>` (created if needed; several processes may write
    /// different parts of the same step at once): each layer to `layer-NNNN.blob` (temporary
    /// name, fsync, rename), then `part-<part>.json` listing them (temporary name, fsync,
    /// rename, fsync of the directory). When it returns, the part is durable; the step becomes
    /// a checkpoint only when `commit` runs.
    ///
    /// `part` names the writer (1–64 of `A–Z a–z 0–9 _ . -`, e.g. "stage0"); writing the same part
    /// again replaces its record. Throws `.alreadyCommitted` when `step-<step>` exists.
    ///
    /// Synchronous: call it from a background task on a snapshot of the layers. Besides the
    /// layers it needs scratch memory of about twice the largest tensor.
    @discardableResult
    public func writeLayers(step: Int, part: String, layers: [LayerCheckpoint], options: CheckpointWriteOptions = CheckpointWriteOptions(), progress: CheckpointProgressHandler? = nil) throws(CheckpointError) -> CheckpointPart {
        try Self.checkStep(step)
        guard CheckpointLayout.isValidPartName(part) else {
            throw CheckpointError(.invalidArgument, "part name '\(part)' is not allowed: use 1–\(CheckpointLayout.maximumPartNameLength) of A–Z a–z 0–9 _ . - (not starting with a dot), e.g. stage0")
        }
        guard !layers.isEmpty else {
            throw CheckpointError(.invalidArgument, "part \(part) of step \(step) has no layers to write")
        }
        var seen = Set<Int>()
        for layer in layers {
            try Self.checkWritable(layer, part: part)
            guard seen.insert(layer.index).inserted else {
                throw CheckpointError(.invalidArgument, "part \(part) of step \(step) lists layer \(layer.index) twice")
            }
        }
        guard !fileExists(directory(step: step)) else {
            throw CheckpointError(.alreadyCommitted, "checkpoint \(directory(step: step)) is already committed; write the next checkpoint under a new step", path: directory(step: step))
        }
        let encoder = try TensorEncoder(options: options)
        let incoming = incomingDirectory(step: step)
        do throws(DatasetError) {
            try makeDirectories(root)
            // Several writers race to create it: mkdir, and EEXIST is success.
            if mkdir(incoming, 0o755) != 0 && errno != EEXIST {
                throw DatasetError.io("create the directory", incoming, errno: errno)
            }
        } catch {
            throw CheckpointError(io: error, doing: "cannot start checkpoint step \(step)")
        }

        // Encode and write every blob, starting each one's writeback as soon as it is written,
        // then fsync and rename them in order: the disk works while the next blob is encoded,
        // and nothing is visible under its final name before it is durable.
        var blobs: [CheckpointBlobRecord] = []
        var files: [AtomicFileWriter] = []
        blobs.reserveCapacity(layers.count)
        do throws(CheckpointError) {
            for layer in layers {
                let (blob, file) = try writeBlob(layer, into: incoming, encoder: encoder)
                file.startWriteback()
                blobs.append(blob)
                files.append(file)
                progress?(CheckpointProgress(blobs: blobs.count, totalBlobs: layers.count, bytes: blobs.reduce(0) { $0 + $1.bytes }))
            }
        } catch {
            for file in files { file.abandon() }
            throw error
        }
        for (index, file) in files.enumerated() {
            do throws(DatasetError) {
                try file.commit()
            } catch {
                for later in files[(index + 1)...] { later.abandon() }
                throw CheckpointError(io: error, doing: "cannot write \(file.path)")
            }
        }
        let record = CheckpointPart(step: step, part: part, zstd: CheckpointCompressionInfo(level: options.level, libraryVersion: Zstd.libraryVersion), blobs: blobs)
        let recordPath = joinPath(incoming, CheckpointLayout.partRecordName(part: part))
        do throws(DatasetError) {
            try writeFileAtomically(recordPath, CheckpointJSON.encode(record))
            try syncDirectory(incoming)
        } catch {
            throw CheckpointError(io: error, doing: "cannot write the part record of \(part) for step \(step)")
        }
        return record
    }

    /// Refuses layers the reader would refuse, before anything is written.
    static func checkWritable(_ layer: LayerCheckpoint, part: String) throws(CheckpointError) {
        let state = layer.state
        let spec = state.spec
        func refuse(_ what: String) -> CheckpointError {
            CheckpointError(.invalidArgument, "part \(part), layer \(layer.index): \(what)")
        }
        guard layer.index >= 0, layer.index < CheckpointLayout.maximumLayerCount else {
            throw refuse("the index is outside 0…\(CheckpointLayout.maximumLayerCount - 1)")
        }
        guard spec.fanIn >= 1, spec.fanOut >= 1, spec.fanIn <= 1 << 24, spec.fanOut <= 1 << 24 else { throw refuse("spec \(spec.fanIn)→\(spec.fanOut) is out of range") }
        guard state.optimizerStep >= 0 else { throw refuse("negative optimizer step \(state.optimizerStep)") }
        let tensors = state.tensors
        guard tensors.count >= 2, tensors[0].name == "weight", tensors[0].shape == [spec.fanIn, spec.fanOut],
              tensors[1].name == "bias", tensors[1].shape == [spec.fanOut] else {
            throw refuse("the state must start with weight [\(spec.fanIn), \(spec.fanOut)] and bias [\(spec.fanOut)], not \(tensors.prefix(2).map { "\($0.name) \($0.shape)" })")
        }
        var names = Set<String>()
        for tensor in tensors + layer.extras {
            guard CheckpointLayout.isValidTensorName(tensor.name) else {
                throw refuse("tensor name '\(tensor.name)' is not allowed (use 1–128 of A–Z a–z 0–9 _ . -)")
            }
            guard names.insert(tensor.name).inserted else { throw refuse("tensor \(tensor.name) appears twice (extras share the state's names)") }
            guard tensor.shape.count <= 8, tensor.values.count <= CheckpointLayout.maximumTensorElements else {
                throw refuse("tensor \(tensor.name) \(tensor.shape) has too many dimensions or elements")
            }
        }
    }

    /// Writes one layer's blob under its temporary name; the caller commits (fsync, rename) or
    /// abandons the returned file.
    private func writeBlob(_ layer: LayerCheckpoint, into incoming: String, encoder: TensorEncoder) throws(CheckpointError) -> (CheckpointBlobRecord, AtomicFileWriter) {
        let name = CheckpointLayout.blobName(layer: layer.index)
        let path = joinPath(incoming, name)
        let file: AtomicFileWriter
        do throws(DatasetError) {
            file = try AtomicFileWriter(path: path, uniqueTemporaryName: true)
        } catch {
            throw CheckpointError(io: error, doing: "cannot create \(path)")
        }
        var records: [CheckpointTensorRecord] = []
        var offset = 0
        var writeFailed = false  // a failed write has already abandoned (closed) the file
        do throws(CheckpointError) {
            for tensor in layer.state.tensors + layer.extras {
                let record = try encoder.encode(tensor, offset: offset) { (record, stored) throws(CheckpointError) in
                    do throws(DatasetError) {
                        try file.write(stored)
                    } catch {
                        writeFailed = true
                        throw CheckpointError(io: error, doing: "cannot write \(path)")
                    }
                    return record
                }
                records.append(record)
                offset += record.storedBytes
            }
        } catch {
            if !writeFailed { file.abandon() }
            throw error
        }
        let stateCount = layer.state.tensors.count
        let blob = CheckpointBlobRecord(
            layer: layer.index, file: name, bytes: offset, spec: layer.state.spec, optimizerStep: layer.state.optimizerStep,
            tensors: Array(records[..<stateCount]), extras: Array(records[stateCount...])
        )
        do throws(CheckpointError) {
            try blob.validate(path: path)
        } catch {
            file.abandon()
            throw error
        }
        return (blob, file)
    }
}

/// Writes `bytes` to `path` through a temporary file: fsync, rename. The caller fsyncs the directory.
func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws(DatasetError) {
    let file = try AtomicFileWriter(path: path, uniqueTemporaryName: true)
    try withRawBytes(bytes) { (raw) throws(DatasetError) in try file.write(raw) }
    try file.commit()
}

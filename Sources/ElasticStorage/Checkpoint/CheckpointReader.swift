import ElasticNumerics

/// One thing wrong with a checkpoint: where (blob file and tensor, when it is about one), which
/// check failed, and what was found.
public struct CheckpointProblem: Sendable, Equatable, CustomStringConvertible {
    /// The file, relative to the checkpoint directory (`manifest.json`, `layer-0002.blob`); nil
    /// for the directory itself.
    public var file: String?
    public var tensor: String?
    public var check: CheckpointError.Kind
    public var detail: String

    public init(file: String?, tensor: String?, check: CheckpointError.Kind, detail: String) {
        self.file = file
        self.tensor = tensor
        self.check = check
        self.detail = detail
    }

    public var description: String {
        var place = file ?? "directory"
        if let tensor { place += " tensor \(tensor)" }
        return "\(place): \(check): \(detail)"
    }
}

/// What `CheckpointReader.verify` found.
public struct CheckpointVerification: Sendable {
    /// How much is checked.
    public enum Depth: Sendable, Equatable, Comparable {
        /// The manifest parses and validates; every blob exists with its recorded size. Reads
        /// only the manifest.
        case structure
        /// And the XXH64 of every stored tensor (reads every blob; finds any damaged byte).
        case storedChecksums
        /// And every tensor decompresses and un-transforms to its raw checksum and shape.
        case full
    }

    public var path: String
    public var depth: Depth
    /// nil when the manifest is missing or invalid.
    public var manifest: CheckpointManifest?
    /// Empty when the checkpoint is valid.
    public var problems: [CheckpointProblem]
    /// Blob bytes read.
    public var bytesRead: Int

    public var isValid: Bool { manifest != nil && problems.isEmpty }
}

/// Progress of a checkpoint read or write, reported after each blob: blobs done of all, and
/// the stored bytes read or written so far.
public struct CheckpointProgress: Sendable, Equatable {
    public var blobs: Int
    public var totalBlobs: Int
    public var bytes: Int

    public init(blobs: Int, totalBlobs: Int, bytes: Int) {
        self.blobs = blobs
        self.totalBlobs = totalBlobs
        self.bytes = bytes
    }
}

/// Called on the reading or writing thread, in order.
public typealias CheckpointProgressHandler = (CheckpointProgress) -> Void

/// A checkpoint read back: its manifest and its layers, in layer order, bit-exact.
public struct LoadedCheckpoint: Sendable, Equatable {
    public var path: String
    public var manifest: CheckpointManifest
    public var layers: [LayerCheckpoint]
}

/// Reads and verifies one checkpoint directory (`…/step-00000120`, or any copy of one).
/// Nothing here traps on damaged files: every check failure becomes a `CheckpointProblem` or a
/// `CheckpointError`.
public enum CheckpointReader {
    /// The directory's manifest, decoded and validated (nothing else is read).
    public static func readManifest(directory: String) throws(CheckpointError) -> CheckpointManifest {
        var scan = Scan(directory: directory, depth: .structure, layers: nil, keepTensors: false, stopAtFirstProblem: true)
        return try scan.manifestOrThrow()
    }

    /// Runs every check up to `depth` and reports each problem; never throws.
    public static func verify(directory: String, depth: CheckpointVerification.Depth = .full, progress: CheckpointProgressHandler? = nil) -> CheckpointVerification {
        var scan = Scan(directory: directory, depth: depth, layers: nil, keepTensors: false, stopAtFirstProblem: false)
        scan.run(progress: progress)
        return CheckpointVerification(path: directory, depth: depth, manifest: scan.manifest, problems: scan.problems, bytesRead: scan.bytesRead)
    }

    /// The checkpoint's manifest and layers (`layers`: only those indices; nil: all), fully
    /// verified; throws the first problem found. The tensors of each layer keep their written order.
    public static func load(directory: String, layers: Set<Int>? = nil, progress: CheckpointProgressHandler? = nil) throws(CheckpointError) -> LoadedCheckpoint {
        var scan = Scan(directory: directory, depth: .full, layers: layers, keepTensors: true, stopAtFirstProblem: true)
        let manifest = try scan.manifestOrThrow()
        if let layers, let bad = layers.first(where: { $0 < 0 || $0 >= manifest.layerCount }) {
            throw CheckpointError(.invalidArgument, "checkpoint \(directory) has layers 0…\(manifest.layerCount - 1); layer \(bad) was asked for", path: directory)
        }
        scan.run(progress: progress)
        if let error = scan.firstError { throw error }
        return LoadedCheckpoint(path: directory, manifest: manifest, layers: scan.loaded)
    }
}

/// One pass over a checkpoint directory, shared by verify and load.
private struct Scan {
    let directory: String
    let depth: CheckpointVerification.Depth
    let layers: Set<Int>?
    let keepTensors: Bool
    let stopAtFirstProblem: Bool

    var manifest: CheckpointManifest?
    var manifestRead = false
    var problems: [CheckpointProblem] = []
    var firstError: CheckpointError?
    var loaded: [LayerCheckpoint] = []
    var bytesRead = 0
    /// Reused from tensor to tensor.
    private var stored: [UInt8] = []
    private let decoder = TensorDecoder()

    init(directory: String, depth: CheckpointVerification.Depth, layers: Set<Int>?, keepTensors: Bool, stopAtFirstProblem: Bool) {
        self.directory = directory
        self.depth = depth
        self.layers = layers
        self.keepTensors = keepTensors
        self.stopAtFirstProblem = stopAtFirstProblem
    }

    var shouldStop: Bool { stopAtFirstProblem && firstError != nil }

    mutating func report(_ kind: CheckpointError.Kind, file: String?, tensor: String? = nil, _ detail: String, advice: String = "the checkpoint is damaged — restore falls back to an older checkpoint") {
        problems.append(CheckpointProblem(file: file, tensor: tensor, check: kind, detail: detail))
        if firstError == nil {
            var place = "checkpoint \(directory)"
            if let file { place += ": \(file.hasSuffix(".blob") ? "blob " : "")\(file)" }
            if let tensor { place += " tensor \(tensor)" }
            firstError = CheckpointError(kind, "\(place): \(detail); \(advice)", path: file.map { joinPath(directory, $0) } ?? directory)
        }
    }

    /// Reads the manifest (once); records the problem and returns nil when it cannot.
    mutating func readManifest() -> CheckpointManifest? {
        if manifestRead { return manifest }
        manifestRead = true
        guard CheckpointFiles.isDirectoryFollowingLinks(directory) else {
            report(.notFound, file: nil, "the directory does not exist (or is not a directory)", advice: "check the path")
            return nil
        }
        let path = joinPath(directory, CheckpointManifest.fileName)
        let bytes: [UInt8]
        do throws(DatasetError) {
            bytes = try readSmallFile(path, limit: CheckpointManifest.maximumSize) { DatasetError(.manifestMissing, "\($0) is missing", path: $0) }
        } catch {
            if error.code == .manifestMissing {
                report(.manifestMissing, file: CheckpointManifest.fileName, "the manifest is missing, so this is not a complete checkpoint",
                       advice: "restore falls back to an older checkpoint")
            } else if error.code == .tooLarge {
                report(.manifestInvalid, file: CheckpointManifest.fileName, "the manifest is larger than \(CheckpointManifest.maximumSize) bytes")
            } else {
                report(.io, file: CheckpointManifest.fileName, error.message)
            }
            return nil
        }
        do throws(CheckpointError) {
            let decoded = try CheckpointManifest.decode(bytes, path: path)
            if let step = CheckpointLayout.step(fromDirectoryName: lastComponent(directory)), step != decoded.step {
                report(.manifestInvalid, file: CheckpointManifest.fileName, "the manifest is for step \(decoded.step), but the directory is for step \(step)")
                return nil
            }
            manifest = decoded
        } catch {
            problems.append(CheckpointProblem(file: CheckpointManifest.fileName, tensor: nil, check: error.kind, detail: error.message))
            if firstError == nil { firstError = error }
        }
        return manifest
    }

    mutating func manifestOrThrow() throws(CheckpointError) -> CheckpointManifest {
        guard let manifest = readManifest() else {
            throw firstError ?? CheckpointError(.manifestInvalid, "checkpoint \(directory): cannot read the manifest", path: directory)
        }
        return manifest
    }

    mutating func run(progress: CheckpointProgressHandler? = nil) {
        guard let manifest = readManifest() else { return }
        let selected = manifest.blobs.filter { layers?.contains($0.layer) ?? true }
        for (index, blob) in selected.enumerated() {
            if shouldStop { return }
            check(blob)
            progress?(CheckpointProgress(blobs: index + 1, totalBlobs: selected.count, bytes: bytesRead))
        }
    }

    private mutating func check(_ blob: CheckpointBlobRecord) {
        let path = joinPath(directory, blob.file)
        let actualSize: Int
        switch CheckpointFiles.kind(path) {
        case .file(let size):
            actualSize = size
            if size != blob.bytes {
                report(.blobSize, file: blob.file, "the file is \(size) bytes, the manifest records \(blob.bytes) (\(size < blob.bytes ? "truncated" : "grown"))")
                if shouldStop { return }
            }
        case .missing:
            report(.blobMissing, file: blob.file, "the blob file is missing")
            return
        case .directory, .other:
            report(.blobMissing, file: blob.file, "not a regular file")
            return
        }
        guard depth > .structure else { return }
        let file: ReadableFile
        do throws(DatasetError) {
            file = try ReadableFile(path: path) { DatasetError(.shardMissing, "\($0) disappeared", path: $0) }
        } catch {
            report(.io, file: blob.file, error.message)
            return
        }
        var tensors: [NamedTensor] = []
        for record in blob.allTensors {
            if shouldStop { return }
            // Tensors beyond the end of a truncated file are covered by the blobSize problem.
            guard record.offset + record.storedBytes <= actualSize else { continue }
            if stored.count < record.storedBytes { stored = [UInt8](repeating: 0, count: record.storedBytes) }
            do throws(DatasetError) {
                try withMutableRawBytes(&stored) { (buffer) throws(DatasetError) in
                    try file.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<record.storedBytes]), at: record.offset)
                }
            } catch {
                report(.io, file: blob.file, tensor: record.name, error.message)
                continue
            }
            bytesRead += record.storedBytes
            do throws(TensorDecoder.Failure) {
                try withRawBytes(stored) { (buffer) throws(TensorDecoder.Failure) in
                    let bytes = UnsafeRawBufferPointer(rebasing: buffer[..<record.storedBytes])
                    switch (depth, keepTensors) {
                    case (.storedChecksums, _), (.structure, _):
                        try TensorDecoder.checkStored(bytes, record)
                    case (.full, false):
                        try decoder.check(bytes, record)
                    case (.full, true):
                        // The manifest validation guarantees elements × 4 == rawBytes, so the shape fits.
                        tensors.append(NamedTensor(name: record.name, shape: record.shape, values: try decoder.decode(bytes, record)))
                    }
                }
            } catch {
                report(error.kind, file: blob.file, tensor: record.name, error.detail, advice: "the file is corrupt — restore falls back to an older checkpoint")
            }
        }
        if keepTensors, firstError == nil, tensors.count == blob.allTensors.count {
            let state = LayerState(spec: blob.spec, optimizerStep: blob.optimizerStep, tensors: Array(tensors[..<blob.tensors.count]))
            loaded.append(LayerCheckpoint(index: blob.layer, state: state, extras: Array(tensors[blob.tensors.count...])))
        }
    }
}

/// The last path component, ignoring trailing slashes.
func lastComponent(_ path: String) -> String {
    var trimmed = Substring(path)
    while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
    return trimmed.split(separator: "/").last.map(String.init) ?? String(trimmed)
}

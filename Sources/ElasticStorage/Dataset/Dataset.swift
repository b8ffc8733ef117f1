import Synchronization

/// An opened data set directory: a validated manifest and shard headers, and the shards'
/// samples loaded on demand, for random access by global sample index.
///
/// Training reads samples through the epoch permutation: step t of epoch e gathers positions
/// [t·B, (t+1)·B) of `DataOrder.permutation(seed:epoch:count:)` (DESIGN.md invariant 2):
///
///     let order = DataOrder.permutation(seed: seed, epoch: e, count: dataset.sampleCount)
///     let batch = try dataset.gather(order: order, positions: DataOrder.stepRange(step: t, batch: B))
///
/// With `.atOpen` verification (the default) `open` reads and checks every shard and keeps it
/// in memory. With `.onFirstUse` it checks only the manifest and headers; a shard is read and
/// its payload checked the first time a sample of it is asked for (or by `load(shard:)`), so a
/// worker holds only the shards it touches.
public final class Dataset: Sendable {
    /// When payload checksums are verified.
    public enum Verification: String, Sendable, Codable {
        /// Read and verify every shard in `open` (errors surface before training starts).
        case atOpen
        /// Verify each shard when it is first loaded (faster open, less memory).
        case onFirstUse
    }

    public let directory: String
    public let manifest: DatasetManifest
    public let verification: Verification
    public let limits: DatasetLimits
    /// The validated headers, one per manifest shard.
    public let headers: [ShardHeader]

    private let loaded: Mutex<[ShardSamples?]>

    /// One shard's samples, as loaded.
    struct ShardSamples: Sendable {
        var features: [Float]
        var labels: [Int32]
    }

    public var sampleCount: Int { manifest.samples }
    public var featureCount: Int { manifest.features }
    public var classes: Int { manifest.classes }
    public var shape: DatasetShape { manifest.shape }
    public var fingerprint: String { manifest.fingerprint }

    private init(directory: String, manifest: DatasetManifest, verification: Verification, limits: DatasetLimits, headers: [ShardHeader]) {
        self.directory = directory
        self.manifest = manifest
        self.verification = verification
        self.limits = limits
        self.headers = headers
        loaded = Mutex(Array(repeating: nil, count: headers.count))
    }

    /// Path of shard `k`'s file.
    public func path(ofShard k: Int) -> String { joinPath(directory, manifest.shards[k].file) }

    // MARK: - Opening

    /// Opens the data set in `directory`: reads and validates `manifest.json`, then every shard
    /// header (magic, version, header checksum, counts, agreement with the manifest), then —
    /// with `.atOpen` — every payload (checksum, finite features, labels in range).
    /// Throws a `DatasetError` naming the file and the check that failed.
    public static func open(
        _ directory: String,
        verification: Verification = .atOpen,
        limits: DatasetLimits = .init(),
        progress: DatasetProgressHandler = { _ in }
    ) throws(DatasetError) -> Dataset {
        let manifest = try readManifest(directory)
        var headers: [ShardHeader] = []
        headers.reserveCapacity(manifest.shards.count)
        for k in manifest.shards.indices {
            headers.append(try readHeader(directory: directory, manifest: manifest, shard: k, limits: limits).header)
        }
        let dataset = Dataset(directory: directory, manifest: manifest, verification: verification, limits: limits, headers: headers)
        if verification == .atOpen {
            var done = 0
            progress(DatasetProgress(phase: .verifying, completed: 0, total: manifest.samples, unit: .samples))
            for k in headers.indices {
                try dataset.load(shard: k)
                done += headers[k].sampleCount
                progress(DatasetProgress(phase: .verifying, completed: done, total: manifest.samples, unit: .samples))
            }
            if let counts = manifest.classCounts {
                let actual = try dataset.classCounts()
                guard actual == counts else {
                    let path = joinPath(directory, DatasetManifest.fileName)
                    throw DatasetError(.manifestMismatch, "\(path) \(classCountDifference(listed: counts, actual: actual)): the manifest and the shards come from different writes; write the data set again", path: path)
                }
            }
        }
        return dataset
    }

    /// Reads and validates `directory/manifest.json`.
    public static func readManifest(_ directory: String) throws(DatasetError) -> DatasetManifest {
        let path = joinPath(directory, DatasetManifest.fileName)
        if !fileExists(directory) {
            throw DatasetError(.manifestMissing, "there is no data set at \(directory): the directory does not exist (make one with 'elastic data generate' or 'elastic data import')", path: directory)
        }
        let bytes = try readSmallFile(path, limit: DatasetLimits.maximumManifestBytes) { path in
            DatasetError(.manifestMissing, "\(directory) has no \(DatasetManifest.fileName): it is not a data set, or writing it was interrupted; write it again", path: path)
        }
        return try DatasetManifest.decode(bytes, path: path)
    }

    /// Opens shard `k`, reads and checks its header against the file and the manifest.
    static func readHeader(directory: String, manifest: DatasetManifest, shard k: Int, limits: DatasetLimits) throws(DatasetError) -> (header: ShardHeader, file: ReadableFile) {
        let entry = manifest.shards[k]
        let path = joinPath(directory, entry.file)
        let file = try ReadableFile(path: path) { path in
            DatasetError(.shardMissing, "\(path) is missing (the manifest lists it as shard \(k), samples \(entry.firstSample)..<\(entry.firstSample + entry.samples)): the data set is incomplete; copy it again or write it again", path: path)
        }
        let bytes = try file.readBytes(count: ShardHeader.size, at: 0)
        let header = try ShardHeader.decode(bytes, fileLength: file.length, path: path, limits: limits)
        func mismatch(_ what: String, header value: String, manifest expected: String) -> DatasetError {
            DatasetError(.manifestMismatch, "\(path): its header says \(what) \(value), but \(DatasetManifest.fileName) says \(expected): the manifest and the shards come from different writes; write the data set again", path: path)
        }
        if header.firstSample != entry.firstSample { throw mismatch("first sample", header: "\(header.firstSample)", manifest: "\(entry.firstSample)") }
        if header.sampleCount != entry.samples { throw mismatch("sample count", header: "\(header.sampleCount)", manifest: "\(entry.samples)") }
        if header.featureCount != manifest.features { throw mismatch("feature count", header: "\(header.featureCount)", manifest: "\(manifest.features)") }
        if header.labels != manifest.labels { throw mismatch("labels", header: "\(header.labels)", manifest: "\(manifest.labels)") }
        if header.fileLength != entry.bytes { throw mismatch("file length", header: "\(header.fileLength)", manifest: "\(entry.bytes)") }
        let crc = CRC32C.hex(header.payloadCRC32C)
        if crc != entry.payloadCRC32C.lowercased() { throw mismatch("payload CRC32C", header: crc, manifest: entry.payloadCRC32C) }
        return (header, file)
    }

    // MARK: - Loading shards

    /// Reads shard `k` (if not yet loaded) and verifies its payload: checksum, finite features,
    /// labels in range.
    public func load(shard k: Int) throws(DatasetError) {
        guard headers.indices.contains(k) else {
            throw DatasetError(.indexOutOfRange, "there is no shard \(k) in \(directory): it has shards 0…\(headers.count - 1)", path: directory)
        }
        if loaded.withLock({ $0[k] != nil }) { return }
        let samples = try readShard(k)
        loaded.withLock { $0[k] = samples }
    }

    /// Forgets shard `k`'s samples; the next access reads (and verifies) it again.
    public func unload(shard k: Int) {
        guard headers.indices.contains(k) else { return }
        loaded.withLock { $0[k] = nil }
    }

    /// Indices of the shards in memory.
    public var loadedShards: [Int] {
        loaded.withLock { shards in shards.indices.filter { shards[$0] != nil } }
    }

    private func readShard(_ k: Int) throws(DatasetError) -> ShardSamples {
        try Self.readShard(directory: directory, manifest: manifest, shard: k, limits: limits)
    }

    /// Reads shard `k` whole and verifies it: header (as `readHeader`), payload checksum,
    /// finite features, labels in range.
    static func readShard(directory: String, manifest: DatasetManifest, shard k: Int, limits: DatasetLimits) throws(DatasetError) -> ShardSamples {
        let (header, file) = try readHeader(directory: directory, manifest: manifest, shard: k, limits: limits)
        let path = file.path
        let featureCount = header.sampleCount * header.featureCount
        var crc = CRC32C()
        let features = try [Float](unsafeUninitializedCapacity: featureCount) { (buffer, initialized) throws(DatasetError) in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            try file.readExactly(into: raw, at: ShardHeader.size)
            crc.update(UnsafeRawBufferPointer(raw))
            initialized = featureCount
        }
        let labels = try [Int32](unsafeUninitializedCapacity: header.sampleCount) { (buffer, initialized) throws(DatasetError) in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            try file.readExactly(into: raw, at: ShardHeader.size + header.featureBytes)
            crc.update(UnsafeRawBufferPointer(raw))
            initialized = header.sampleCount
        }
        guard crc.value == header.payloadCRC32C else {
            throw DatasetError(.payloadChecksumMismatch, "\(path): the payload checksum does not match (CRC32C \(CRC32C.hex(crc.value)), header and manifest say \(CRC32C.hex(header.payloadCRC32C))): the file is corrupted; copy or regenerate it", path: path)
        }
        #if _endian(big)
        let samples = ShardSamples(
            features: features.map { Float(bitPattern: UInt32(littleEndian: $0.bitPattern)) },
            labels: labels.map { Int32(littleEndian: $0) })
        #else
        let samples = ShardSamples(features: features, labels: labels)
        #endif
        try samples.features.withUnsafeBufferPointer { (buffer) throws(DatasetError) in
            try LabelledSamples.checkFinite(buffer, featureCount: header.featureCount, firstSample: header.firstSample, source: path, path: path)
        }
        try samples.labels.withUnsafeBufferPointer { (buffer) throws(DatasetError) in
            try DatasetShape.checkLabels(buffer, classes: header.labels.classes, firstSample: header.firstSample, source: path, path: path)
        }
        return samples
    }

    /// Every shard's samples, loading what is missing (in shard order).
    private func shardsLoaded(_ needed: [Bool]) throws(DatasetError) -> [ShardSamples?] {
        for k in needed.indices where needed[k] { try load(shard: k) }
        return loaded.withLock { $0 }
    }

    // MARK: - Random access

    /// The samples at the given global indices, in the order given (repeats allowed): features
    /// row-major, `indices.count × featureCount`. Loads (and, lazily, verifies) the shards it
    /// touches. Throws `.indexOutOfRange` for an index outside [0, sampleCount).
    public func gather<Indices: Collection>(indices: Indices) throws(DatasetError) -> LabelledSamples where Indices.Element == Int32 {
        let count = indices.count
        let width = featureCount
        var shardOf = [Int32](repeating: 0, count: count)
        var needed = [Bool](repeating: false, count: headers.count)
        for (position, index) in indices.enumerated() {
            guard let k = manifest.shardIndex(containing: Int(index)) else {
                throw DatasetError(.indexOutOfRange, "sample index \(index) (position \(position) of the request) is outside the \(sampleCount) samples of \(directory)", path: directory)
            }
            shardOf[position] = Int32(k)
            needed[k] = true
        }
        let shards = try shardsLoaded(needed)
        var features = [Float](repeating: 0, count: count * width)
        var labels = [Int32](repeating: 0, count: count)
        features.withUnsafeMutableBufferPointer { out in
            labels.withUnsafeMutableBufferPointer { outLabels in
                for (position, index) in indices.enumerated() {
                    let k = Int(shardOf[position])
                    let local = Int(index) - headers[k].firstSample
                    // Loaded above; `needed[k]` was set for this shard.
                    let shard = shards[k]!
                    shard.features.withUnsafeBufferPointer { source in
                        (out.baseAddress! + position * width).update(from: source.baseAddress! + local * width, count: width)
                    }
                    outLabels[position] = shard.labels[local]
                }
            }
        }
        return LabelledSamples(featureCount: width, classes: classes, features: features, labels: labels)
    }

    /// The samples at positions `positions` of an epoch order (`DataOrder.permutation`).
    public func gather(order: [Int32], positions: Range<Int>) throws(DatasetError) -> LabelledSamples {
        guard positions.lowerBound >= 0, positions.upperBound <= order.count else {
            throw DatasetError(.indexOutOfRange, "positions \(positions) are outside the epoch order of \(order.count) samples", path: directory)
        }
        return try gather(indices: order[positions])
    }

    /// All samples, in index order.
    public func allSamples() throws(DatasetError) -> LabelledSamples {
        try gather(indices: (0..<Int32(sampleCount)))
    }

    /// Samples per class over the whole data set (loads every shard).
    public func classCounts() throws(DatasetError) -> [Int] {
        let shards = try shardsLoaded(Array(repeating: true, count: headers.count))
        var counts = [Int](repeating: 0, count: classes)
        for shard in shards {
            // Every shard was loaded, and loading checked the labels' range.
            for label in shard!.labels { counts[Int(label)] += 1 }
        }
        return counts
    }
}

/// "lists 12 samples of class 3, but the shards hold 11", for the first class that differs.
func classCountDifference(listed: [Int], actual: [Int]) -> String {
    let k = zip(listed, actual).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? 0
    return "lists \(listed[k]) samples of class \(k), but the shards hold \(actual[k])"
}

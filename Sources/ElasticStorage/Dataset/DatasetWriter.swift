extension Dataset {
    /// The file name of shard `k`: `shard-00000.eds`, `shard-00001.eds`, …
    public static func shardFileName(_ k: Int) -> String {
        let digits = String(k)
        return "shard-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits + ".eds"
    }

    /// The global sample range of shard `k` when `samples` are split into `shards` shards:
    /// [⌊k·N/S⌋, ⌊(k+1)·N/S⌋), so sizes differ by at most one.
    public static func shardRange(_ k: Int, samples: Int, shards: Int) -> Range<Int> {
        (k * samples / shards)..<((k + 1) * samples / shards)
    }

    /// Writes `samples` as a data set of `shards` shard files plus `manifest.json` in
    /// `directory` (created if needed) and returns the manifest.
    ///
    /// Atomic: each shard is written under a temporary name, fsynced and renamed; the manifest
    /// is written the same way, last, and the directory fsynced, so a reader sees either no
    /// data set or a complete one. A directory that already holds a data set is refused unless
    /// `overwrite`; then its manifest is removed first (the old data set stops being one), and
    /// shard files the new manifest does not list are removed after it is written.
    @discardableResult
    public static func write(
        _ samples: LabelledSamples,
        to directory: String,
        shards: Int = 1,
        name: String,
        origin: String,
        overwrite: Bool = false,
        progress: DatasetProgressHandler = { _ in }
    ) throws(DatasetError) -> DatasetManifest {
        try samples.validate(source: origin.isEmpty ? "the samples" : origin)
        let n = samples.count
        guard shards >= 1, shards <= n else {
            throw DatasetError(.invalidArgument, "cannot split \(n) samples into \(shards) shards: use 1 to \(n) shards")
        }
        guard !name.isEmpty else { throw DatasetError(.invalidArgument, "a data set needs a name") }

        let manifestPath = joinPath(directory, DatasetManifest.fileName)
        if let existing = try directoryEntries(directory) {
            let ours = existing.filter { $0 == DatasetManifest.fileName || isShardFileName($0) }
            if !ours.isEmpty && !overwrite {
                throw DatasetError(.alreadyExists, "\(directory) already holds a data set (\(ours.prefix(3).joined(separator: ", "))\(ours.count > 3 ? ", …" : "")): choose another directory, or overwrite it", path: directory)
            }
            if fileExists(manifestPath) {
                try removeFile(manifestPath)
                try syncDirectory(directory)
            }
        } else {
            try makeDirectories(directory)
        }

        let width = samples.featureCount
        let layout = LabelLayout.classIndex(classes: samples.classes)
        var entries: [DatasetManifest.Shard] = []
        let totalBytes = shards * ShardHeader.size + n * (width * 4 + layout.bytesPerSample)
        var written = 0
        progress(DatasetProgress(phase: .writing, completed: 0, total: totalBytes, unit: .bytes))
        for k in 0..<shards {
            let range = shardRange(k, samples: n, shards: shards)
            let fileName = shardFileName(k)
            let path = joinPath(directory, fileName)
            let header = try writeShard(samples, range: range, layout: layout, path: path)
            entries.append(DatasetManifest.Shard(file: fileName, firstSample: range.lowerBound, samples: range.count, bytes: header.fileLength, payloadCRC32C: CRC32C.hex(header.payloadCRC32C)))
            written += header.fileLength
            progress(DatasetProgress(phase: .writing, completed: written, total: totalBytes, unit: .bytes))
        }
        try syncDirectory(directory)

        var counts = [Int](repeating: 0, count: samples.classes)
        for label in samples.labels { counts[Int(label)] += 1 }
        let manifest = DatasetManifest(name: name, origin: origin, samples: n, features: width, labels: layout, classCounts: counts, shards: entries)
        let writer = try AtomicFileWriter(path: manifestPath)
        try manifest.encoded().withUnsafeBufferPointer { (bytes) throws(DatasetError) in try writer.write(UnsafeRawBufferPointer(bytes)) }
        try writer.commit()
        try syncDirectory(directory)

        // Shards of an overwritten data set that the new one does not use, and temporary files
        // an interrupted earlier write left behind.
        let listed = Set(entries.map(\.file))
        for file in try directoryEntries(directory) ?? [] where (isShardFileName(file) && !listed.contains(file)) || isTemporaryFileName(file) {
            try removeFile(joinPath(directory, file))
        }
        return manifest
    }

    /// `write` from plain arrays.
    @discardableResult
    public static func write(
        features: [Float], labels: [Int32], featureCount: Int, classes: Int,
        to directory: String, shards: Int = 1, name: String, origin: String, overwrite: Bool = false,
        progress: DatasetProgressHandler = { _ in }
    ) throws(DatasetError) -> DatasetManifest {
        try write(LabelledSamples(featureCount: featureCount, classes: classes, features: features, labels: labels),
                  to: directory, shards: shards, name: name, origin: origin, overwrite: overwrite, progress: progress)
    }

    /// Writes samples `range` as one shard file (little-endian on every host).
    private static func writeShard(_ samples: LabelledSamples, range: Range<Int>, layout: LabelLayout, path: String) throws(DatasetError) -> ShardHeader {
        let width = samples.featureCount
        #if _endian(big)
        let features = samples.features[range.lowerBound * width..<range.upperBound * width].map { $0.bitPattern.littleEndian }
        let labels = samples.labels[range].map { $0.littleEndian }
        #else
        let features = samples.features[range.lowerBound * width..<range.upperBound * width]
        let labels = samples.labels[range]
        #endif
        return try features.withUnsafeBufferPointer { (features) throws(DatasetError) in
            try labels.withUnsafeBufferPointer { (labels) throws(DatasetError) in
                let featureBytes = UnsafeRawBufferPointer(features)
                let labelBytes = UnsafeRawBufferPointer(labels)
                var crc = CRC32C()
                crc.update(featureBytes)
                crc.update(labelBytes)
                let header = ShardHeader(firstSample: range.lowerBound, sampleCount: range.count, featureCount: width, labels: layout, payloadCRC32C: crc.value)
                let writer = try AtomicFileWriter(path: path)
                try header.encoded().withUnsafeBufferPointer { (bytes) throws(DatasetError) in try writer.write(UnsafeRawBufferPointer(bytes)) }
                try writer.write(featureBytes)
                try writer.write(labelBytes)
                try writer.commit()
                return header
            }
        }
    }

    static func isShardFileName(_ name: String) -> Bool {
        name.hasPrefix("shard-") && name.hasSuffix(".eds")
    }

    /// `.shard-00000.eds.tmp-PID` and `.manifest.json.tmp-PID`, as `AtomicFileWriter` names them.
    static func isTemporaryFileName(_ name: String) -> Bool {
        (name.hasPrefix(".shard-") || name.hasPrefix("." + DatasetManifest.fileName)) && name.contains(".tmp-")
    }
}

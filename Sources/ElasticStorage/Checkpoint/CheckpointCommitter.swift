#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension CheckpointStore {
    /// Makes step `step` a checkpoint, once every writer's `writeLayers` has returned:
    ///
    /// 1. reads the part records in `.incoming-<step>` and checks that layers 0..<layerCount are
    ///    each written exactly once, with blob files of the recorded sizes;
    /// 2. writes `manifest.json` (temporary name, fsync, rename) and fsyncs the directory;
    /// 3. renames `.incoming-<step>` to `step-<step>` and fsyncs the root;
    /// 4. moves `latest` to it (`latest.tmp`, fsync, rename, fsync the root), unless `latest`
    ///    already names a newer step.
    ///
    /// A crash anywhere leaves either no new checkpoint or a complete one (see the doc). Throws
    /// `.incomplete` naming the missing layers, `.nothingWritten`, `.alreadyCommitted`, or `.io`.
    @discardableResult
    public func commit(step: Int, header: CheckpointHeader, layerCount: Int) throws(CheckpointError) -> CheckpointSummary {
        try Self.checkStep(step)
        guard layerCount >= 1, layerCount <= CheckpointLayout.maximumLayerCount else {
            throw CheckpointError(.invalidArgument, "layer count \(layerCount) is out of range 1…\(CheckpointLayout.maximumLayerCount)")
        }
        guard header.createdAt >= 0, header.dataCursor.epoch >= 0, header.dataCursor.offset >= 0, header.dataCursor.samplesConsumed >= 0 else {
            throw CheckpointError(.invalidArgument, "checkpoint header of step \(step) has a negative time or data cursor: \(header.createdAt), \(header.dataCursor)")
        }
        let final = directory(step: step)
        guard CheckpointFiles.kind(final) == .missing else {
            throw CheckpointError(.alreadyCommitted, "checkpoint \(final) is already committed; nothing to do", path: final)
        }
        let incoming = incomingDirectory(step: step)
        guard CheckpointFiles.isDirectory(incoming) else {
            throw CheckpointError(.nothingWritten, "no layers were written for step \(step) (\(incoming) does not exist): every stage must call writeLayers before the commit", path: incoming)
        }

        let parts = try readParts(step: step, incoming: incoming)
        let blobs = try assemble(step: step, parts: parts, layerCount: layerCount, incoming: incoming)
        let zstd = parts.first?.zstd ?? CheckpointCompressionInfo(level: CheckpointWriteOptions.defaultLevel, libraryVersion: Zstd.libraryVersion)
        let summaries = parts.map { CheckpointPartSummary(name: $0.part, layers: $0.blobs.map(\.layer), zstd: $0.zstd) }
        let manifest = CheckpointManifest(step: step, header: header, zstd: zstd, parts: summaries, blobs: blobs)
        try manifest.validate(path: joinPath(incoming, CheckpointManifest.fileName))

        do throws(DatasetError) {
            try writeFileAtomically(joinPath(incoming, CheckpointManifest.fileName), manifest.encoded())
            try syncDirectory(incoming)
            try CheckpointFiles.rename(incoming, final)
            try syncDirectory(root)
        } catch {
            throw CheckpointError(io: error, doing: "cannot commit checkpoint step \(step)")
        }
        let movedLatest = try moveLatest(to: step)
        return CheckpointSummary(manifest: manifest, path: final, isValid: true, problem: nil, isLatest: movedLatest)
    }

    /// Removes `.incoming-<step>` (a checkpoint abandoned before its commit, e.g. when the plan
    /// changed while stages were writing). Missing is not an error.
    public func discardIncoming(step: Int) throws(CheckpointError) {
        try Self.checkStep(step)
        do throws(DatasetError) {
            try CheckpointFiles.removeTree(incomingDirectory(step: step))
        } catch {
            throw CheckpointError(io: error, doing: "cannot discard the incoming checkpoint of step \(step)")
        }
    }

    /// The steps with an `.incoming-<step>` directory, ascending.
    public func incomingSteps() throws(CheckpointError) -> [Int] {
        try entries().compactMap { CheckpointLayout.step(fromIncomingName: $0) }.sorted()
    }

    // MARK: - Steps of the commit

    /// The part records, sorted by part name; also removes writers' leftover temporary files.
    private func readParts(step: Int, incoming: String) throws(CheckpointError) -> [CheckpointPart] {
        let names: [String]
        do throws(DatasetError) {
            names = try directoryEntries(incoming) ?? []
        } catch {
            throw CheckpointError(io: error, doing: "cannot list \(incoming)")
        }
        var parts: [CheckpointPart] = []
        for name in names {
            if name.hasPrefix("."), name.contains(".tmp-") {
                // A writer that crashed (or is fenced) left this; it is not part of the checkpoint.
                try? removeFile(joinPath(incoming, name))
                continue
            }
            guard name.hasPrefix("part-"), name.hasSuffix(".json") else { continue }
            let path = joinPath(incoming, name)
            let bytes: [UInt8]
            do throws(DatasetError) {
                bytes = try readSmallFile(path, limit: CheckpointPart.maximumSize) { DatasetError(.shardMissing, "\($0) disappeared", path: $0) }
            } catch {
                throw CheckpointError(io: error, doing: "cannot read the part record \(path)")
            }
            let part = try CheckpointPart.decode(bytes, path: path)
            guard part.step == step, name == CheckpointLayout.partRecordName(part: part.part) else {
                throw CheckpointError(.manifestInvalid, "\(path) records part '\(part.part)' of step \(part.step), not of step \(step): remove it (or discard the incoming checkpoint) and write the step again", path: path)
            }
            parts.append(part)
        }
        return parts.sorted { $0.part < $1.part }
    }

    /// The blob records of layers 0..<layerCount, each from exactly one part and present on disk.
    private func assemble(step: Int, parts: [CheckpointPart], layerCount: Int, incoming: String) throws(CheckpointError) -> [CheckpointBlobRecord] {
        var owners = [String?](repeating: nil, count: layerCount)
        var records = [CheckpointBlobRecord?](repeating: nil, count: layerCount)
        for part in parts {
            for blob in part.blobs {
                guard blob.layer < layerCount else {
                    throw CheckpointError(.incomplete, "cannot commit step \(step): part \(part.part) wrote layer \(blob.layer), but the model has \(layerCount) layers (0…\(layerCount - 1)); discard the incoming checkpoint and write it again under the current model", path: incoming)
                }
                if let owner = owners[blob.layer] {
                    throw CheckpointError(.incomplete, "cannot commit step \(step): layer \(blob.layer) was written by both part \(owner) and part \(part.part) (the plan changed while writing?); discard the incoming checkpoint and write it again", path: incoming)
                }
                owners[blob.layer] = part.part
                records[blob.layer] = blob
            }
        }
        let missing = records.indices.filter { records[$0] == nil }
        guard missing.isEmpty else {
            let written = parts.isEmpty ? "no part records" : "parts " + parts.map { "\($0.part) \(Self.ranges($0.blobs.map(\.layer)))" }.joined(separator: ", ")
            throw CheckpointError(.incomplete, "cannot commit step \(step): layers \(Self.ranges(missing)) of \(layerCount) were not written (found \(written)); wait for every stage's writeLayers to finish, or write the missing layers", path: incoming)
        }
        var blobs: [CheckpointBlobRecord] = []
        for case let blob? in records {
            let path = joinPath(incoming, blob.file)
            switch CheckpointFiles.kind(path) {
            case .file(let size) where size == blob.bytes:
                blobs.append(blob)
            case .file(let size):
                throw CheckpointError(.blobSize, "cannot commit step \(step): \(path) is \(size) bytes, but its part record says \(blob.bytes); write layer \(blob.layer) again", path: path)
            default:
                throw CheckpointError(.blobMissing, "cannot commit step \(step): \(path) is missing although part \(owners[blob.layer] ?? "?") lists it; write layer \(blob.layer) again", path: path)
            }
        }
        return blobs
    }

    /// Points `latest` at `step` unless it names a newer step; returns whether it moved.
    private func moveLatest(to step: Int) throws(CheckpointError) -> Bool {
        if let current = readLatest(), let currentStep = CheckpointLayout.step(fromDirectoryName: current), currentStep > step {
            return false
        }
        let temporary = latestPath + ".tmp"
        let contents = Array((CheckpointLayout.stepDirectoryName(step: step) + "\n").utf8)
        do throws(DatasetError) {
            try CheckpointFiles.writeDurably(temporary, contents)
            try CheckpointFiles.rename(temporary, latestPath)
            try syncDirectory(root)
        } catch {
            throw CheckpointError(io: error, doing: "checkpoint step \(step) is committed, but moving \(latestPath) to it failed, so restore still uses the checkpoint `latest` names until the next commit moves it")
        }
        return true
    }

    /// "0–3, 7" for [0, 1, 2, 3, 7].
    static func ranges(_ values: [Int]) -> String {
        let sorted = values.sorted()
        var parts: [String] = []
        var index = 0
        while index < sorted.count {
            var end = index
            while end + 1 < sorted.count, sorted[end + 1] == sorted[end] + 1 { end += 1 }
            parts.append(end == index ? "\(sorted[index])" : "\(sorted[index])–\(sorted[end])")
            index = end + 1
        }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }
}

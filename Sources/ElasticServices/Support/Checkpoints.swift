import ElasticStorage
import Foundation

/// What `elastic checkpoint …` does, kept out of the CLI: listing, verifying, showing and
/// exporting checkpoints, and copying one into another root (re-compressed).
public enum Checkpoints {
    /// A checkpoint argument: a step directory (`…/step-00000120`), `ROOT/latest`, or a root
    /// (meaning its `latest`).
    public static func resolve(_ argument: String) throws -> String {
        var url = URL(fileURLWithPath: argument).standardizedFileURL
        if url.lastPathComponent == "latest" {
            url = url.deletingLastPathComponent()
        } else if CheckpointLayout.step(fromDirectoryName: url.lastPathComponent) != nil {
            return url.path
        }
        let store = CheckpointStore(root: url.path)
        guard let latest = store.readLatest(), CheckpointLayout.step(fromDirectoryName: latest) != nil else {
            throw ElasticError("\(argument) is neither a checkpoint (step-NNNNNNNN) nor a checkpoint root with a 'latest' pointer; 'elastic checkpoint list DIR' shows what is there")
        }
        return url.appendingPathComponent(latest).path
    }

    /// `elastic checkpoint list ROOT`: one row per committed checkpoint, oldest first.
    public static func listTable(root: String, verifyAll: Bool) throws -> String {
        let store = CheckpointStore(root: root)
        var summaries = try store.list()
        guard !summaries.isEmpty else { return "no checkpoints in \(root)" }
        if verifyAll {
            for index in summaries.indices {
                let verification = CheckpointReader.verify(directory: summaries[index].path)
                summaries[index].isValid = verification.isValid
                summaries[index].problem = verification.problems.first?.description
            }
        }
        let formatter = ISO8601DateFormatter()
        var rows = [["STEP", "WRITTEN", "LAYERS", "RAW", "STORED", "RATIO", "VALID", ""]]
        for summary in summaries {
            let time = summary.createdAt.map { formatter.string(from: Date(timeIntervalSince1970: Double($0) / 1000)) } ?? "?"
            rows.append([
                String(summary.step), time, String(summary.layerCount), bytes(summary.rawBytes), bytes(summary.storedBytes),
                summary.storedBytes > 0 ? String(format: "%.3f", summary.ratio) : "-",
                summary.isValid ? (verifyAll ? "yes" : "yes (structure)") : "NO: \(summary.problem ?? "?")",
                summary.isLatest ? "← latest" : "",
            ])
        }
        return formatTable(rows).joined(separator: "\n")
    }

    /// `elastic checkpoint verify DIR`: every check; returns the report and whether it passed.
    public static func verify(_ directory: String) -> (text: String, valid: Bool) {
        let verification = CheckpointReader.verify(directory: directory)
        guard verification.isValid, let manifest = verification.manifest else {
            let lines = verification.problems.map { "  \($0.file ?? "-")\($0.tensor.map { " " + $0 } ?? ""): \($0.check) — \($0.detail)" }
            return ("\(directory): INVALID (\(verification.problems.count) problem(s))\n" + lines.joined(separator: "\n"), false)
        }
        let tensors = manifest.blobs.reduce(0) { $0 + $1.allTensors.count }
        return ("\(directory): valid — step \(manifest.step), \(manifest.blobs.count) blobs, \(tensors) tensors, \(bytes(verification.bytesRead)) read; every size, stored checksum, decompression, raw checksum and shape checked", true)
    }

    /// `elastic checkpoint inspect DIR`: the manifest as a table or as JSON.
    public static func inspect(_ directory: String, json: Bool) throws -> String {
        let manifest = try CheckpointReader.readManifest(directory: directory)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return String(decoding: try encoder.encode(manifest), as: UTF8.self)
        }
        let formatter = ISO8601DateFormatter()
        var lines = [
            "checkpoint   \(directory)",
            "job          \(manifest.jobName) (spec hash \(manifest.jobSpecHash))",
            "step         \(manifest.step) (epoch \(manifest.dataCursor.epoch), offset \(manifest.dataCursor.offset), \(manifest.dataCursor.samplesConsumed) samples consumed)",
            "generation   \(manifest.generation)",
            "written      \(formatter.string(from: Date(timeIntervalSince1970: Double(manifest.createdAt) / 1000)))",
            "plan         " + manifest.plan.stages.map { "[layers \($0.firstLayer)-\($0.lastLayer): \($0.members.joined(separator: " "))]" }.joined(separator: " "),
            "zstd         level \(manifest.zstd.level), libzstd \(manifest.zstd.libraryVersion)",
            "size         \(bytes(manifest.rawBytes)) raw, \(bytes(manifest.storedBytes)) stored (ratio \(String(format: "%.3f", manifest.storedBytes > 0 ? Double(manifest.rawBytes) / Double(manifest.storedBytes) : 0)))",
            "",
        ]
        var rows = [["LAYER", "FILE", "TENSOR", "SHAPE", "TRANSFORM", "CODEC", "RAW", "STORED", "RATIO"]]
        for blob in manifest.blobs {
            for tensor in blob.allTensors {
                rows.append([
                    String(blob.layer), blob.file, tensor.name, tensor.shape.map(String.init).joined(separator: "×"),
                    tensor.transform.rawValue, tensor.codec.rawValue, bytes(tensor.rawBytes), bytes(tensor.storedBytes),
                    tensor.storedBytes > 0 ? String(format: "%.3f", Double(tensor.rawBytes) / Double(tensor.storedBytes)) : "-",
                ])
            }
        }
        lines.append(contentsOf: formatTable(rows))
        return lines.joined(separator: "\n")
    }

    /// `elastic checkpoint export DIR --npz FILE`: every tensor, verified, as a NumPy archive.
    public static func exportNPZ(_ directory: String, to file: String) throws -> String {
        let loaded = try CheckpointReader.load(directory: directory)
        try CheckpointExport.writeNPZ(loaded, to: file)
        let arrays = try CheckpointExport.arrays(of: loaded)
        return "wrote \(arrays.count) arrays of step \(loaded.manifest.step) to \(file) (numpy.load reads it)"
    }

    /// `elastic checkpoint copy DIR ROOT`: verifies the checkpoint and writes it into another
    /// root with the same two-phase protocol as training (blobs, part record, manifest last,
    /// atomic rename, `latest`), at another zstd level if asked.
    public static func copy(_ directory: String, to root: String, options: CheckpointWriteOptions, progress: ((String) -> Void)? = nil) throws -> CheckpointSummary {
        let loaded = try CheckpointReader.load(directory: directory)
        let store = CheckpointStore(root: root)
        let step = loaded.manifest.step
        progress?("writing \(loaded.layers.count) layers of step \(step) into \(root)")
        _ = try store.writeLayers(step: step, part: "copy", layers: loaded.layers, options: options)
        progress?("committing")
        return try store.commit(step: step, header: loaded.manifest.header, layerCount: loaded.manifest.layerCount)
    }

    static func bytes(_ count: Int) -> String { byteCount(UInt64(max(0, count))) }
}

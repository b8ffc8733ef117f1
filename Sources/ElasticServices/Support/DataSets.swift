import ElasticCore
import ElasticStorage
import Foundation

/// The data commands' work, so that the CLI only parses and prints.
public enum DataSets {
    public static func generateW1(directory: String, seed: UInt64, samples: Int, shards: Int, overwrite: Bool, progress: ProgressReporter) throws -> String {
        let manifest: DatasetManifest
        do {
            manifest = try W1Dataset.write(to: directory, seed: seed, samples: samples, shards: shards, overwrite: overwrite, progress: progress.handler)
        } catch {
            throw ElasticError("\(error)")
        }
        return "wrote \(manifest.samples) samples × \(manifest.features) features, \(manifest.classes) classes, in \(manifest.shards.count) shard(s) to \(directory)"
    }

    /// Every shard's status (a bad shard is reported, not thrown); throws when the report
    /// finds a problem, after it is printed, so that the exit status says.
    public static func inspect(directory: String, json: Bool, progress: ProgressReporter) throws -> (text: String, valid: Bool) {
        let report: DatasetReport
        do {
            report = try Dataset.inspect(directory, progress: progress.handler)
        } catch {
            throw ElasticError("\(error)")
        }
        let valid = report.isValid
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            return (String(decoding: try encoder.encode(report), as: UTF8.self), valid)
        }
        return (report.table, valid)
    }

    /// Imports a CSV file or a pair of .npy files into a data set of `shards` shards.
    public static func importData(
        csv: String?, npyFeatures: String?, npyLabels: String?, labelColumn: String, header: String, classes: Int?,
        out: String, shards: Int, overwrite: Bool, progress: ProgressReporter
    ) throws -> String {
        let handler = progress.handler
        do {
            let samples: LabelledSamples
            let origin: String
            if let csv {
                let options = CSVImportOptions(header: CSVImportOptions.Header(rawValue: header) ?? .auto, labelColumn: .init(argument: labelColumn), classes: classes)
                samples = try DatasetImport.csv(csv, options: options, progress: handler)
                origin = "csv \(csv)"
            } else if let npyFeatures, let npyLabels {
                samples = try DatasetImport.numpy(features: npyFeatures, labels: npyLabels, classes: classes, progress: handler)
                origin = "npy \(npyFeatures) \(npyLabels)"
            } else {
                throw ElasticError("give --csv FILE, or --npy-features FILE and --npy-labels FILE")
            }
            let name = URL(fileURLWithPath: out).lastPathComponent
            let manifest = try Dataset.write(samples, to: out, shards: shards, name: name, origin: origin, overwrite: overwrite, progress: handler)
            return "imported \(manifest.samples) samples × \(manifest.features) features, \(manifest.classes) classes, into \(manifest.shards.count) shard(s) in \(out)"
        } catch let error as ElasticError {
            throw error
        } catch {
            throw ElasticError("\(error)")
        }
    }

    /// Checks a job file as the controller will, and makes its data path absolute, so that a
    /// controller started elsewhere finds the same data set.
    public static func resolveJob(_ bytes: [UInt8], relativeTo directory: URL) throws -> [UInt8] {
        let job = try AcceptedJob.load(json: bytes, baseDirectory: directory)
        return job.json
    }
}

extension ProgressReporter {
    /// Feeds a data set operation's progress (phase, samples or bytes) to this reporter.
    var handler: DatasetProgressHandler {
        { self.update($0.phase.rawValue, completed: $0.completed, total: $0.total, unit: $0.unit == .bytes ? .bytes : .items("samples")) }
    }
}

import { InvalidArgumentError, Option, type Command } from 'commander';
import { loadMnist, select } from '../../data';
import { mlp } from '../../model';
import { LinkEstimator, calibrateTraining, makeProfile, readHardware } from '../../profile';
import { Trainer } from '../../train';
import { validateNodeId } from '../../transport';
import { int, intList, positive } from '../options';

type Opts = Record<string, any>; // commander's parsed options, validated by each option's parser

/** The same rule as the agent's: a node id is one MQTT topic level. */
function nodeIdArg(v: string): string {
  try {
    return validateNodeId(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** `fedgate profile`: prints this gateway's profile (the message it publishes retained) as JSON on stdout. */
export function addProfileCommand(program: Command): Command {
  return program
    .command('profile')
    .description('print this gateway\'s hardware profile as JSON (what the agent publishes on node/<id>/profile)')
    .option('--calibrate', 'also measure training throughput: a short timed run of the MLP on a small MNIST sample')
    .option('--calibrate-seconds <s>', 'length of the timed calibration run', positive, 1)
    .option('--samples <n>', 'MNIST rows used for calibration', int(32), 2048)
    .addOption(new Option('--hidden <sizes>', 'hidden layer sizes of the calibrated MLP, comma-separated').argParser(intList).default([128], '128'))
    .option('--batch-size <n>', 'batch size of the calibration run', int(1), 32)
    .option('--threads <n>', 'ONNX Runtime threads', int(1), 1)
    .option('--load-window <ms>', 'how long CPU load is measured for', int(50), 1000)
    .option('--node-id <id>', 'include this node id in the profile', nodeIdArg)
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('warn'))
    .action(async (o: Opts) => {
      // Hardware and load first, so the calibration's own CPU use is not in the load figures.
      const hw = await readHardware({ loadWindowMs: o.loadWindow });
      let throughput: number | null = null;
      let model: string | null = null;
      if (o.calibrate) {
        const train = loadMnist('train');
        const shard = select(train, Array.from({ length: Math.min(o.samples, train.n) }, (_, i) => i));
        const spec = mlp(train.features, o.hidden, train.classes);
        const trainer = await Trainer.create(spec, { threads: o.threads });
        try {
          await trainer.setData(shard.x, shard.labels);
          const cal = await calibrateTraining(trainer, { seconds: o.calibrateSeconds, batchSize: o.batchSize });
          throughput = Math.round(cal.samplesPerSecond);
          model = cal.model;
        } finally {
          await trainer.close();
        }
      }
      const profile = makeProfile(hw, { node: o.nodeId, ts: Date.now(), trainSamplesPerSecond: throughput, trainModel: model, link: new LinkEstimator().estimate });
      process.stdout.write(JSON.stringify(profile, null, 2) + '\n');
    });
}

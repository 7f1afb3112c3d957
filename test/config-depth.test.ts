import { describe, expect, it } from 'vitest';
import { checkConfig, defaultConfig, mergeConfig } from '../agent/config';

/** Regression: a settings payload nested 3000 levels deep (a retained node config from MQTT) overflowed the stack. */
describe('settings nested absurdly deep', () => {
  const nested = (levels: number) => JSON.parse(`${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`);
  const message = 'a configuration nested more than 32 levels deep is refused (no setting is deeper than 4)';

  it('are refused by the schema check and by the merge with one clear message', () => {
    expect(checkConfig({ training: nested(3000) }, 'agent').issues).toEqual([{ path: '(root)', message }]);
    expect(() => mergeConfig(defaultConfig('agent'), { training: nested(3000) })).toThrow(message);
  });

  it('up to 32 levels go through to the ordinary checks', () => {
    expect(checkConfig({ training: nested(30) }, 'agent').issues).toEqual([{ path: 'training.a', message: 'unknown setting; known here: threads, maxCpuLoad, minBatteryPercent, maxTemperatureC, paused' }]);
    expect(() => mergeConfig(defaultConfig('agent'), { training: nested(30) })).not.toThrow();
  });
});

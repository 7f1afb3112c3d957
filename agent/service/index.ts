export { serviceNotifier, watchdogMs, type ServiceNotifier, type SendNotify } from './notify';
export { EXIT_CONFIG, PermanentConfigError } from './exit';

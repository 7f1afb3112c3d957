export { serviceNotifier, watchdogMs, type ServiceNotifier, type SendNotify } from './notify';

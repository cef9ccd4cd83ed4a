/**
 * A start's phases in the sidebar (kernels and jobs): while it starts, one line per phase
 * with the seconds spent in it and its message, the current one marked
 * (`.jp-DSSContainers-phases[data-phase]`, `.jp-DSSContainers-phase[data-phase][data-current]`);
 * once ready, one summary line (`started in 3.4 s: queued 0.0 s · pulling image 3.1 s ...`).
 * The phase names have one home, the server's `jupyter_dss_containers/phases.py`.
 */
import { IPhase } from './api';

const CLS = 'jp-DSSContainers';
const FINAL = ['ready', 'failed'];

function el(tag: string, cls: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  node.className = cls;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function seconds(value: number): string {
  return `${value.toFixed(1)} s`;
}

/** Whether a start is still going on (the sidebar then refreshes faster). */
export function starting(phases: IPhase[] | undefined): boolean {
  const last = phases?.length ? phases[phases.length - 1] : null;
  return last !== null && !FINAL.includes(last.phase);
}

/** The phases of a start, or null when there are none to show. */
export function renderPhases(phases: IPhase[] | undefined): HTMLElement | null {
  if (!phases || !phases.length) {
    return null;
  }
  const last = phases[phases.length - 1];
  const box = el('div', `${CLS}-phases`);
  box.setAttribute('data-phase', last.phase);
  if (last.phase === 'ready') {
    const total = phases.reduce((sum, p) => sum + p.seconds, 0);
    const steps = phases
      .filter(p => !FINAL.includes(p.phase))
      .map(p => `${p.label} ${seconds(p.seconds)}`);
    box.append(el('div', `${CLS}-phase-summary`, `started in ${seconds(total)}: ${steps.join(' · ')}`));
    box.title = phases.map(p => `${p.label}: ${p.message}`).join('\n');
    return box;
  }
  for (const phase of phases) {
    const row = el('div', `${CLS}-phase`);
    row.setAttribute('data-phase', phase.phase);
    row.setAttribute('data-current', String(phase.current));
    row.append(
      el('span', `${CLS}-phase-label`, phase.label),
      el('span', `${CLS}-phase-seconds`, FINAL.includes(phase.phase) ? '' : seconds(phase.seconds))
    );
    if (phase.message) {
      row.append(el('div', `${CLS}-phase-message`, phase.message));
    }
    box.append(row);
  }
  return box;
}

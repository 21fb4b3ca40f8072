export default function TrainingPanel() {
  return <section><h2>训练管理 / Training</h2></section>;
}

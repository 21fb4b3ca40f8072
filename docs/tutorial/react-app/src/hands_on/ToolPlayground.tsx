export default function ToolPlayground() {
  return <section><h2>工具测试 / Tool playground</h2></section>;
}
